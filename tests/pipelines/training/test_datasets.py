"""Training data: records from a phantom folder, the image cache, report-derived QA pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.training.datasets import (
    DatasetError,
    ImageCache,
    StudyDataset,
    derive_qa_pairs,
    load_records,
)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    from pipelines.phantoms import PhantomConfig, generate_phantoms

    out = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(out, n=6, seed=3, progress=False, config=PhantomConfig(size=64))
    return out


def test_records_split_filter_and_frontal_first(phantom_dir):
    every = load_records(phantom_dir)
    assert len(every) == 6
    train = load_records(phantom_dir, "train")
    assert train and all(r.split == "train" for r in train)
    held_out = load_records(phantom_dir, ["val", "test"])
    assert len(train) + len(held_out) == 6
    for r in every:
        assert len(r.view_paths) == 2 and all(p.is_file() for p in r.view_paths)
        assert r.view_paths[0].parent.name.endswith(("_PA", "_AP"))  # frontal first
        assert r.view_paths[1].parent.name.endswith("_LL")
        assert r.report.startswith("FINDINGS: ") and "\nIMPRESSION: " in r.report


def test_unknown_split_and_missing_file_raise(phantom_dir, tmp_path):
    with pytest.raises(DatasetError, match="no study"):
        load_records(phantom_dir, "nope")
    with pytest.raises(DatasetError, match="reports.jsonl"):
        load_records(tmp_path)
    (tmp_path / "reports.jsonl").write_text('{"findings": "x"}\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=":1: malformed"):
        load_records(tmp_path)


def test_image_cache_decodes_each_file_once(phantom_dir, tmp_path):
    records = load_records(phantom_dir)
    cache = ImageCache(32, tmp_path / "cache")
    ds = StudyDataset(records, cache, max_views=2)
    images = ds.images(0)
    assert len(images) == 2
    for img in images:
        assert img.shape == (32, 32) and img.dtype == np.float32
        assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.01
    ds.images(0)
    assert cache.decoded == 2  # memory hit
    fresh = ImageCache(32, tmp_path / "cache")
    again = StudyDataset(records, fresh, max_views=1).images(0)
    assert fresh.decoded == 0  # .npy hit on disk
    np.testing.assert_array_equal(again[0], images[0])
    other_size = ImageCache(16, tmp_path / "cache")
    assert other_size.get(records[0].view_paths[0]).shape == (16, 16)
    assert other_size.decoded == 1  # the size is part of the key


def test_qa_pairs_are_grounded_in_the_report():
    rng = np.random.default_rng(0)
    pairs = derive_qa_pairs(
        "The heart is normal in size. Small left pleural effusion. No pneumothorax.",
        "Small left pleural effusion.",
        rng,
    )
    by_obs = {p.observation: p for p in pairs}
    eff = by_obs["Pleural Effusion"]
    assert eff.label == "positive" and eff.answer.startswith("Yes.") and "effusion" in eff.answer
    assert eff.question.endswith("?") and "pleural effusion" in eff.question
    assert by_obs["Pneumothorax"].answer == "No." and by_obs["Pneumothorax"].label == "negative"
    assert by_obs["Cardiomegaly"].answer == "No."
    assert by_obs["Support Devices"].label == "absent"


def test_qa_templates_vary_with_the_rng():
    questions = {
        derive_qa_pairs("Lungs clear.", "Normal.", np.random.default_rng(s), observations=["Edema"])[0].question
        for s in range(20)
    }
    assert len(questions) > 1


def test_phantom_reports_yield_yes_answers(phantom_dir):
    records = load_records(phantom_dir)
    rng = np.random.default_rng(0)
    answers = [p for r in records for p in derive_qa_pairs(r.findings, r.impression, rng)]
    assert any(p.answer.startswith("Yes.") for p in answers)
    assert any(p.answer == "No." for p in answers)
    json.dumps([p.__dict__ for p in answers])  # plain data
