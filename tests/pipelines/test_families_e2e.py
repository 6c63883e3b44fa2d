"""Every supported family end to end through the real CLI, as a user would run it on a downloaded model.

Per family: tiny random checkpoint -> `save_pretrained` -> `medvlm draft --model DIR` on phantom DICOM
into a SQLite store -> the dashboard's study detail shows the draft -> `medvlm ask` answers ->
`medvlm evaluate` prints the model-vs-baselines table. 2-4 s per family on 2 CPU cores (~40 s for all
ten), so every family runs by default. LoRA per family is tested in tests/medvlm.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _draft_worker import make_phantoms
from _families import families, save_family
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory) -> Path:
    """Eight phantom studies with reports.jsonl (train / val / test splits)."""
    return make_phantoms(tmp_path_factory.mktemp("e2e") / "data", n=8, seed=1)


@pytest.fixture(scope="module")
def incoming(phantom_data, tmp_path_factory) -> Path:
    """Two of those studies as the PACS folder the drafting job reads."""
    root = tmp_path_factory.mktemp("incoming")
    for study in sorted(p for p in phantom_data.iterdir() if p.is_dir())[:2]:
        shutil.copytree(study, root / study.name)
    return root


def _cli(*args: str):
    from pipelines.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("family", families())
def test_family_drafts_shows_answers_and_evaluates(family, tmp_path, incoming, phantom_data, monkeypatch):
    from dashboard import logic
    from pipelines.drafting.identity import model_identity
    from pipelines.store import open_store

    monkeypatch.setenv("MEDVLM_VAR_DIR", str(tmp_path / "var"))
    folder = save_family(family, tmp_path / family)
    url = f"sqlite:///{tmp_path / 'store.db'}"

    drafted = _cli("draft", "--model", folder, "--source", incoming, "--db", url, "--workers", "0",
                   "--max-new-tokens", "8", "--batch-size", "2")
    assert drafted.exit_code == 0, drafted.output
    ident = model_identity(folder)
    assert ident.family == family and ident.adapter_hash is None
    with open_store(url) as store:
        table, total = logic.load_worklist(store, logic.WorklistFilters())
        assert total == 2 and set(table["status"]) == {"drafted"}, table
        detail = logic.load_study(store, table["study_uid"].iloc[0])
    assert detail.draft is not None and detail.draft.model_version == ident.model_version
    # random weights write noise (PaliGemma's tiny model only newlines): each sentence carries a confidence
    assert all(s.confidence is not None and 0.0 <= s.confidence <= 1.0 for s in detail.draft.sentences)
    assert detail.latest is not None and detail.latest.status == "draft"

    study = sorted(p for p in incoming.iterdir() if p.is_dir())[0]
    asked = _cli("ask", "Is there a pleural effusion?", "--model", folder, "--study", study)
    assert asked.exit_code == 0, asked.output
    assert "(confidence " in asked.output

    out = tmp_path / "eval"
    scored = _cli("evaluate", "--model", folder, "--data", phantom_data, "--out", out, "--max-new-tokens", "8",
                  "--max-studies", "2")
    assert scored.exit_code == 0, scored.output
    assert "clinical_macro_f1" in scored.output and "written:" in scored.output
    result = json.loads((out / "eval.json").read_text())
    assert result["n_studies"] == 2 and set(result["baselines"]) == {"most_common", "nearest_neighbour"}
    assert 0.0 <= result["baselines"]["nearest_neighbour"]["rouge_l"] <= 1.0
