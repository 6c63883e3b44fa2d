"""Training transforms keep laterality and stay in range."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training.transforms import AugmentConfig, assert_no_flip, build_train_transforms


def _left_blob(size: int = 64) -> np.ndarray:
    """A dark image with a bright blob on the image's left third."""
    img = np.zeros((size, size), dtype=np.float32)
    img[24:40, 6:18] = 1.0
    return img


def test_training_transform_keeps_laterality():
    pipeline = build_train_transforms(AugmentConfig(), image_size=64, seed=123)
    cols = np.arange(64)
    for _ in range(60):
        out = np.asarray(pipeline({"image": _left_blob()})["image"])[0]
        assert out.shape == (64, 64)
        assert 0.0 <= out.min() and out.max() <= 1.0
        weights = out.sum(axis=0)
        centroid = float((weights * cols).sum() / weights.sum())
        assert centroid < 28, f"blob moved to the other side (column centroid {centroid:.1f})"


def test_augmentation_changes_pixels_but_eval_does_not():
    img = _left_blob()
    train = build_train_transforms(AugmentConfig(noise_prob=1.0, contrast_prob=1.0), image_size=64, seed=1)
    evaluate = build_train_transforms(AugmentConfig(enabled=False), image_size=64)
    assert not np.allclose(np.asarray(train({"image": img})["image"])[0], img)
    np.testing.assert_array_equal(np.asarray(evaluate({"image": img})["image"])[0], img)


def test_same_seed_same_augmentation():
    a = build_train_transforms(AugmentConfig(), image_size=64, seed=7)
    b = build_train_transforms(AugmentConfig(), image_size=64, seed=7)
    for _ in range(5):
        np.testing.assert_array_equal(np.asarray(a({"image": _left_blob()})["image"]),
                                      np.asarray(b({"image": _left_blob()})["image"]))


def test_flip_transforms_are_refused():
    from monai.transforms import RandFlipd

    with pytest.raises(ValueError, match="flips"):
        assert_no_flip([RandFlipd(keys=["image"], prob=0.5, spatial_axis=1)])


def test_config_rejects_large_rotation():
    with pytest.raises(ValueError, match="rotate_degrees"):
        AugmentConfig(rotate_degrees=45)
