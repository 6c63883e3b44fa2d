"""The findings head's probabilities: stored with the draft, shown beside it, and disagreements flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PROBS = {"Pleural Effusion": 0.93, "Pleural Effusion|left": 0.9, "Pleural Effusion|right": 0.04,
         "Cardiomegaly": 0.02, "No Finding": 0.05, "Edema": 0.01}


def _payload():
    from medvlm.generate import Draft
    from pipelines.drafting.identity import ModelIdentity
    from pipelines.drafting.worker import draft_payload

    draft = Draft("The heart is enlarged. The lungs are clear.", "Cardiomegaly.", "", findings_probabilities=PROBS)
    ident = ModelIdentity(checkpoint="x", model_version="a" * 64, prompt_hash="b" * 64, adapter_hash=None,
                          image_size=32)
    return draft_payload(draft, ident, low_confidence=0.0)


def test_payload_keeps_probabilities_beside_flags_and_flags_disagreement():
    from pipelines.store.drafts import PROBABILITIES_KEY, parse_flags, parse_probabilities

    payload = _payload()
    assert payload.flags[PROBABILITIES_KEY] == PROBS
    flags = parse_flags(payload.flags)
    assert all(f.code != PROBABILITIES_KEY for f in flags)  # the probabilities are not a flag
    assert {f.code for f in flags} == {"head_disagreement"}
    assert len(flags) == 2  # effusion missing from the text; cardiomegaly asserted but unlikely
    assert parse_probabilities(payload.flags) == PROBS
    assert parse_probabilities({PROBABILITIES_KEY: {"Edema": 1.7, "Cardiomegaly": "x"}}) == {}
    assert parse_probabilities(None) == {}
    json.dumps(payload.flags)  # what the store writes


@pytest.fixture
def store_url(tmp_path, monkeypatch, phantom_dir) -> str:
    from dashboard import logic
    from dashboard.auth import DEFAULT_USERS_FILE
    from pipelines.store import open_store

    url = f"sqlite:///{tmp_path / 'store.db'}"
    payload = _payload()
    rec = json.loads((phantom_dir / "reports.jsonl").read_text().splitlines()[0])
    with open_store(url) as store:
        logic.seed_study(store, study_uid=rec["study_uid"], source=str(phantom_dir), metadata={"views": rec["views"]},
                         findings=payload.findings, impression=payload.impression,
                         sentences=[{"text": "The heart is enlarged.", "section": "findings", "confidence": 0.9},
                                    {"text": "The lungs are clear.", "section": "findings", "confidence": 0.9},
                                    {"text": "Cardiomegaly.", "section": "impression", "confidence": 0.9}],
                         flags=payload.flags)
    monkeypatch.setenv("MEDVLM_DATABASE_URL", url)
    monkeypatch.setenv("MEDVLM_USERS_FILE", str(DEFAULT_USERS_FILE))
    monkeypatch.delenv("MEDVLM_MODEL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-mlflow.db'}")
    return url


def test_study_page_shows_probabilities_and_the_head_flag(store_url):
    from streamlit.testing.v1 import AppTest

    from pipelines.store import open_store
    from pipelines.store.worklist import WorklistFilters, load_worklist

    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.text_input(key="login_user").input("rad")
    at.text_input(key="login_password").input("rad-demo")
    at.button[0].click().run()
    at.button(key="open_first").click().run()
    assert not at.exception
    text = "\n".join(m.value for m in at.markdown)
    assert "Image classifier: per-finding probabilities" in [e.label for e in at.expander]
    assert "- Pleural Effusion: **0.93** (left 0\\.90, right 0\\.04)" in text  # escaped text
    assert "- Edema:" not in text  # under 5%: left out
    warnings = [w.value for w in at.warning]
    assert any("head disagreement" in w and "Pleural Effusion" in w for w in warnings)
    assert any("Cardiomegaly" in w and "unlikely" in w for w in warnings)
    with open_store(store_url) as store:
        (item,) = load_worklist(store, WorklistFilters()).rows
    assert item.flags == 2  # the probabilities do not count as flags
