"""Labelled image folders: the child-level index, and `medvlm evaluate` with the pneumonia finding's scores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipelines.evaluation.image_folder import binary_scores, draft_says_finding, prepare, roc_auc
from pipelines.training.datasets import load_records
from pipelines.training.image_folder import child_of, child_split, kind_of, scan_labelled_folder, write_index

REPO_ROOT = Path(__file__).resolve().parents[3]
NAMES = {
    "NORMAL": ["IM-0001-0001", "IM-0001-0002", "IM-0002-0001", "NORMAL2-IM-0001-0001", "IM-0004-0001", "IM-0005-0001"],
    "PNEUMONIA": ["person1_bacteria_1", "person1_virus_2", "person2_bacteria_3", "person3_virus_4",
                  "person4_bacteria_5", "person5_virus_6"],
}


def labelled_folder(root: Path) -> Path:
    """Two class folders of generated 64x64 PNGs (pneumonia images carry a bright patch), plus one byte copy."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, names in NAMES.items():
        (root / label).mkdir(parents=True)
        for name in names:
            img = 0.3 + 0.05 * rng.standard_normal((64, 64))
            if label == "PNEUMONIA":
                img[20:44, 10:30] += 0.5
            Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / label / f"{name}.png")
    (root / "NORMAL" / "IM-0009-0001.png").write_bytes((root / "NORMAL" / "IM-0001-0001.png").read_bytes())
    return root


def test_children_kinds_and_duplicates(tmp_path):
    assert child_of("person12_bacteria_3.jpeg") == "person12" and child_of("IM-0115-0001.jpeg") == "IM-0115"
    assert child_of("NORMAL2-IM-0383-0001.jpeg") == "NORMAL2-IM-0383"  # another series than IM-0383
    assert kind_of("PNEUMONIA", "person1_virus_2.jpeg") == "virus" and kind_of("NORMAL", "IM-1.jpeg") == "normal"
    items = scan_labelled_folder(labelled_folder(tmp_path / "data"))
    assert len(items) == 12  # the byte-identical copy is kept once
    assert {i.child for i in items if i.path.stem.startswith("person1_")} == {"PNEUMONIA/person1"}


def test_split_is_by_child_and_keeps_both_classes(tmp_path):
    items = scan_labelled_folder(labelled_folder(tmp_path / "data"))
    split = child_split(items, 0.4, seed=0)
    assert child_split(items, 0.4, seed=0) == split  # deterministic: recipe and evaluate agree
    val = {i.child for i in items if split[i.child] == "val"}
    train = {i.child for i in items if split[i.child] == "train"}
    assert val and train and not val & train
    assert {i.label for i in items if i.child in val} == {"NORMAL", "PNEUMONIA"}


def test_index_reports_are_read_back_by_the_labeler(tmp_path):
    out = write_index(labelled_folder(tmp_path / "data"), tmp_path / "index", val_fraction=0.4)
    records = load_records(out)
    lines = [json.loads(x) for x in (out / "reports.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {x["split"] for x in lines} == {"train", "val"}
    for record, line in zip(records, lines, strict=True):
        assert record.view_paths[0].is_file()
        assert draft_says_finding(record.report) == (line["label"] == "PNEUMONIA"), record.report
    viral = next(r for r, x in zip(records, lines, strict=True) if x["kind"] == "virus")
    assert "viral pneumonia" in viral.report


def test_scores():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc([1, 1], [0.2, 0.3]) != roc_auc([1, 1], [0.2, 0.3])  # NaN: one class only
    s = binary_scores([1, 1, 0, 0], [1, 0, 0, 0])
    assert s == {"accuracy": 0.75, "sensitivity": 0.5, "specificity": 1.0}


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """A tiny model without a findings head, and the same with one."""
    from medvlm.build import build_model
    from medvlm.checkpoint import save_checkpoint
    from medvlm.config import ModelConfig
    from medvlm.heads import FindingsClassifier, HeadSpec
    from medvlm.prompts import format_report
    from medvlm.tokenizer import build_tokenizer
    from pipelines.training.image_folder import LABEL_REPORTS

    cfg = ModelConfig.from_yaml(REPO_ROOT / "pipelines" / "configs" / "train_tiny.yaml",
                                {"generation.max_new_tokens": 8, "max_views": 1})
    texts = [format_report(*r) for r in LABEL_REPORTS.values()] * 4
    bundle = build_model(cfg, build_tokenizer(cfg, texts))
    root = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(bundle, root / "plain")
    bundle.head = FindingsClassifier.create(HeadSpec(width=cfg.vision.hidden_size), seed=0)
    save_checkpoint(bundle, root / "head")
    return root / "plain", root / "head"


@pytest.mark.parametrize("which, source", [(0, "token_probability"), (1, "findings_head")])
def test_evaluate_a_labelled_folder(tiny_checkpoints, tmp_path, which, source, monkeypatch):
    from pipelines.evaluation.evaluate import evaluate_command
    from pipelines.evaluation.table import evaluation_output

    data = labelled_folder(tmp_path / "data")
    monkeypatch.chdir(tmp_path)  # the default output folder is var/eval/<name>, relative to the checkout
    result = evaluate_command(str(tiny_checkpoints[which]), data)
    finding = result["finding"]
    assert finding["probability_source"] == source and finding["finding"] == "Pneumonia"
    assert finding["n"] == result["n_studies"] >= 2 and 1 <= finding["positives"] < finding["n"]
    for key in ("accuracy", "sensitivity", "specificity", "roc_auc", "probability_accuracy"):
        assert 0.0 <= finding[key] <= 1.0 and not math.isnan(finding[key]), key
    written = json.loads((tmp_path / "var/eval/data/eval.json").read_text())
    assert written["finding"]["roc_auc"] == finding["roc_auc"]
    assert not (data / "eval").exists()  # nothing written into the (shared, read-only) image folder
    printed = [str(getattr(x, "plain", "")) for x in evaluation_output(result)]
    assert any(line.startswith("Pneumonia (") and "roc_auc" in line for line in printed)


def test_a_reports_folder_has_no_finding_scores(tmp_path):
    assert prepare(tmp_path, tmp_path / "out") == tmp_path  # not an image folder: evaluated as it is


def test_the_shared_radiographs_index_by_child(shared_data, tmp_path):
    kermany = shared_data / "kermany"
    if not kermany.is_dir():
        pytest.skip(f"{kermany} absent: the Kermany radiographs are not in the shared data")
    lines = [json.loads(x) for x in (write_index(kermany, tmp_path / "k") / "reports.jsonl").read_text().splitlines()]
    by_split: dict[str, set] = {"train": set(), "val": set()}
    for x in lines:
        by_split[x["split"]].add(x["child"])
    assert not by_split["train"] & by_split["val"]
    assert len(lines) < 5216  # byte-identical copies kept once
    val_share = sum(x["split"] == "val" for x in lines) / len(lines)
    assert 0.15 < val_share < 0.25
