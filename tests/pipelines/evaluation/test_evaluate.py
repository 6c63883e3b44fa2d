"""`evaluate_command` end to end on a tiny model: numbers in range, both baselines present, files written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]



@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from medvlm.build import build_model
    from medvlm.checkpoint import save_checkpoint
    from medvlm.config import ModelConfig
    from medvlm.tokenizer import build_tokenizer
    from pipelines.phantoms import PhantomConfig, generate_phantoms
    from pipelines.training.datasets import load_records

    data = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(data, n=8, seed=1, progress=False, config=PhantomConfig(size=64))
    cfg = ModelConfig.from_yaml(REPO_ROOT / "pipelines" / "configs" / "train_tiny.yaml", {"generation.max_new_tokens": 12})
    bundle = build_model(cfg, build_tokenizer(cfg, [r.report for r in load_records(data)]))
    ckpt = tmp_path_factory.mktemp("ckpt") / "model"
    save_checkpoint(bundle, ckpt)
    return ckpt, data


def test_evaluate_command_scores_model_and_baselines(tiny_checkpoint, tmp_path):
    from pipelines.evaluation.evaluate import evaluate_command

    ckpt, data = tiny_checkpoint
    summary = evaluate_command(str(ckpt), data, tmp_path / "eval")
    assert summary["n_studies"] >= 1 and summary["split"] == "val,test"
    for system in ("model", "most_common", "nearest_neighbour"):
        s = summary[system]
        for key in ("bleu_1", "bleu_4", "rouge_l", "clinical_micro_f1", "clinical_macro_f1"):
            value = s[key]
            assert value is None or (0.0 <= value <= 1.0 and not math.isnan(value)), (system, key, value)
    # the most common training report is a real report: it shares words with the references
    assert summary["most_common"]["bleu_1"] > 0.1
    assert {v["status"] for v in summary["optional"].values()} <= {"skipped", "ok"}
    assert all("reason" in v for v in summary["optional"].values() if v["status"] == "skipped")
    written = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert len(written["per_finding"]) == 14
    md = (tmp_path / "eval" / "eval.md").read_text()
    assert "| model |" in md and "| most_common |" in md and "| nearest_neighbour |" in md


def test_optional_scorers_skip_with_a_reason(monkeypatch, tmp_path):
    from pipelines.evaluation.evaluate import run_optional_scorers

    monkeypatch.delenv("MEDVLM_RADGRAPH_WEIGHTS", raising=False)
    monkeypatch.setenv("MEDVLM_CHEXBERT_WEIGHTS", str(tmp_path / "missing"))
    monkeypatch.setenv("MEDVLM_GREEN_WEIGHTS", str(tmp_path))
    out = run_optional_scorers(["a"], ["b"])
    assert out["radgraph"] == {"status": "skipped", "reason": "no local weights: set MEDVLM_RADGRAPH_WEIGHTS"}
    assert "missing path" in out["chexbert"]["reason"]
    assert "not installed" in out["green"]["reason"]


def test_evaluate_register_records_baselines_and_the_gate_keeps_a_weak_model_out(tmp_path, mlflow_var_dir):
    """`medvlm evaluate --model HF_DIR --register`: a plain Hugging Face folder is registered with its figures
    and both baselines; random weights do not beat them, so the empty registry gets no champion."""
    import mlflow
    from _families import save_family
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.phantoms import PhantomConfig, generate_phantoms
    from pipelines.tracking.registry import champion_exists
    from pipelines.tracking.tracker import resolve_tracking_uri

    data = tmp_path / "data"
    generate_phantoms(data, n=8, seed=1, progress=False, config=PhantomConfig(size=64))
    folder = save_family("qwen2_vl", tmp_path / "qwen")
    result = CliRunner().invoke(app, ["evaluate", "--model", str(folder), "--data", str(data), "--register",
                                      "--max-new-tokens", "6", "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "registry: version 1: champion unchanged" in " ".join(result.output.split())
    uri = resolve_tracking_uri()
    tags = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version("medvlm", "1").tags
    written = json.loads((tmp_path / "eval" / "eval.json").read_text())
    nn = written["baselines"]["nearest_neighbour"]["clinical_macro_f1"]
    assert tags["family"] == "qwen2_vl" and tags["gate_decision"] == "rejected"
    assert float(tags["baseline_nearest_neighbour_clinical_macro_f1"]) == pytest.approx(nn)
    assert not champion_exists()
    refused = CliRunner().invoke(app, ["evaluate", "--model", "models:/medvlm/1", "--data", str(data), "--register"])
    assert refused.exit_code == 2 and "--register takes a model folder" in refused.output
