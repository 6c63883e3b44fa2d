"""Fixtures shared by the dashboard tests: phantom DICOM and a SQLite store seeded from it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    """Three phantom studies (seed 1), written once per test module; read-only for the tests."""
    from pipelines.phantoms import generate_phantoms

    out = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(out, n=3, seed=1, progress=False)
    return out


@pytest.fixture
def seeded_store_url(tmp_path, phantom_dir) -> str:
    """URL of a fresh SQLite store under tmp_path seeded from ``phantom_dir`` (script probe first)."""
    from dashboard.demo import seed_from_phantoms
    from pipelines.store import open_store

    url = f"sqlite:///{tmp_path / 'store.db'}"
    with open_store(url) as store:
        seed_from_phantoms(store, phantom_dir, probe_first=True)
    return url


@pytest.fixture(scope="module")
def tiny_bundle():
    """A randomly initialised tiny model (32 px images, 6 new tokens) with a BPE trained on a few reports."""
    from medvlm.build import build_model
    from medvlm.config import ModelConfig
    from medvlm.tokenizer import train_report_tokenizer

    corpus = ["FINDINGS: The heart is normal. IMPRESSION: Normal.", "Is there a pleural effusion?", "No."] * 8
    return build_model(ModelConfig.from_dict({"image_size": 32, "generation": {"max_new_tokens": 6}}),
                       train_report_tokenizer(corpus, vocab_size=300))
