"""Retrieval: pooled unit embeddings and the numpy report index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlm.generate import StudyInput, encode_studies
from medvlm.retrieval import ReportIndex, image_embeddings


@pytest.mark.parametrize("tower", ["vit", "siglip", "clip", "dinov2"])
def test_embeddings_are_unit_vectors_per_image(tower, build_tiny, make_image):
    bundle = build_tiny(vision={"kind": tower}, lora={"r": 0})
    (enc,) = encode_studies(bundle, [StudyInput([make_image(0), make_image(1)])])
    with torch.no_grad():
        emb = image_embeddings(bundle, enc["pixel_values"])
        direct = image_embeddings(bundle.llava.model.vision_tower, enc["pixel_values"])
    assert emb.shape == (2, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.equal(emb, direct)
    assert not torch.allclose(emb[0], emb[1])


def test_same_image_retrieves_its_own_report(build_tiny, make_image):
    bundle = build_tiny(vision={"kind": "siglip"}, lora={"r": 0})
    images = [make_image(i) for i in range(5)]
    (enc,) = encode_studies(bundle, [StudyInput(images[:3])])
    (enc2,) = encode_studies(bundle, [StudyInput(images[3:])])
    pv = torch.cat([enc["pixel_values"], enc2["pixel_values"]])
    with torch.no_grad():
        emb = image_embeddings(bundle, pv)
    index = ReportIndex(emb.shape[1])
    index.add(emb, [f"report {i}" for i in range(5)])
    hits = index.search(emb[3], k=2)[0]
    assert hits[0].report == "report 3" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1].score <= hits[0].score


def test_index_search_order_k_and_persistence(tmp_path):
    index = ReportIndex(3)
    index.add(np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=np.float32), ["x", "y", "xy"])
    (hits,) = index.search(np.array([2.0, 0.1, 0.0]), k=10)
    assert [h.report for h in hits] == ["x", "xy", "y"]
    assert hits[0].score == pytest.approx(2.0 / np.hypot(2.0, 0.1))
    two = index.search(np.array([[0, 1, 0], [1, 0, 0]], dtype=np.float32), k=1)
    assert [h[0].report for h in two] == ["y", "x"]
    index.save(tmp_path / "idx")
    assert (tmp_path / "idx" / "embeddings.safetensors").is_file()
    again = ReportIndex.load(tmp_path / "idx")
    assert len(again) == 3
    assert [h.report for h in again.search(np.array([2.0, 0.1, 0.0]), k=3)[0]] == ["x", "xy", "y"]


def test_index_shape_errors_and_empty():
    index = ReportIndex(4)
    assert index.search(np.ones(4), k=3) == [[]]
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        index.add(np.ones((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="2 embeddings but 1 reports"):
        index.add(np.ones((2, 4)), ["a"])
    with pytest.raises(ValueError, match="D=4"):
        index.search(np.ones(5))
