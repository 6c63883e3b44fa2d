"""Training-time preprocessing and augmentation as MONAI dictionary transforms.

Images arrive from `dicom_io` already normalised to float32 in [0, 1] with shape (H, W) at model resolution.
Augmentation is deliberately mild (small affine, contrast, intensity, noise) and **never flips left-right**:
reports name sides ("left pleural effusion"), so a mirrored image paired with the unmirrored report would teach
the model the wrong side. `assert_no_flip` guards every pipeline built here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of training augmentation (all probabilities per sample)."""

    enabled: bool = True
    """False gives the evaluation pipeline (channel + clamp only)."""
    rotate_degrees: float = 5.0
    """Max in-plane rotation; patients are positioned within a few degrees."""
    translate_fraction: float = 0.04
    """Max shift as a fraction of the image side."""
    scale_range: float = 0.05
    """Max zoom in/out (0.05 = +/-5%)."""
    affine_prob: float = 0.5
    """Probability of the affine transform."""
    gamma_range: tuple[float, float] = (0.8, 1.25)
    """Contrast gamma range: exposure and processing differ between sites."""
    contrast_prob: float = 0.5
    """Probability of the gamma transform."""
    intensity_scale: float = 0.1
    """Max relative intensity scaling."""
    noise_std: float = 0.01
    """Std of additive Gaussian noise (quantum noise of low-dose films)."""
    noise_prob: float = 0.3
    """Probability of adding noise."""

    def __post_init__(self) -> None:
        if not 0 <= self.rotate_degrees <= 15:
            raise ValueError(f"augment.rotate_degrees={self.rotate_degrees}: keep within [0, 15] for radiographs")
        if self.gamma_range[0] <= 0 or self.gamma_range[0] > self.gamma_range[1]:
            raise ValueError(f"augment.gamma_range={self.gamma_range}: needs 0 < low <= high")


_FLIP_NAMES = ("flip",)


def assert_no_flip(transforms: Sequence[Callable]) -> None:
    """Raise `ValueError` if any transform in the chain can mirror the image.

    Args:
        transforms: the list handed to `monai.transforms.Compose`.

    Raises:
        ValueError: naming the offending transform class.
    """
    for t in transforms:
        if any(name in type(t).__name__.lower() for name in _FLIP_NAMES):
            raise ValueError(f"{type(t).__name__} flips images; sides in reports would no longer match the pixels")


def build_train_transforms(cfg: AugmentConfig, image_size: int, keys: Sequence[str] = ("image",), seed: int = 0):
    """Build the MONAI dictionary pipeline for training (or evaluation when `cfg.enabled` is False).

    Args:
        cfg: augmentation strength.
        image_size: side of the (square) model input; MONAI translates in pixels, the config in fractions.
        keys: dictionary keys holding (H, W) float32 images in [0, 1].
        seed: the pipeline's own random state (no global RNG).

    Returns:
        A `monai.transforms.Compose` mapping {key: (H, W)} to {key: (1, H, W)} clamped to [0, 1].
    """
    from monai import transforms as mt  # heavy import, only when a pipeline is built

    keys = list(keys)
    chain: list[Callable] = [mt.EnsureChannelFirstd(keys=keys, channel_dim="no_channel")]
    if cfg.enabled:
        shift = cfg.translate_fraction * image_size
        chain += [
            mt.RandAffined(
                keys=keys,
                prob=cfg.affine_prob,
                rotate_range=(math.radians(cfg.rotate_degrees),),
                translate_range=(shift, shift),
                scale_range=(cfg.scale_range, cfg.scale_range),
                padding_mode="border",  # "reflection" (MONAI's default) would mirror anatomy into the border
            ),
            mt.RandAdjustContrastd(keys=keys, prob=cfg.contrast_prob, gamma=cfg.gamma_range),
            mt.RandScaleIntensityd(keys=keys, factors=cfg.intensity_scale, prob=cfg.contrast_prob),
            mt.RandGaussianNoised(keys=keys, prob=cfg.noise_prob, std=cfg.noise_std),
        ]
    # MONAI has no plain dictionary clamp; Lambdad keeps it a dictionary transform.
    chain.append(mt.Lambdad(keys=keys, func=lambda x: x.clamp(0.0, 1.0) if hasattr(x, "clamp") else x.clip(0.0, 1.0)))
    assert_no_flip(chain)
    pipeline = mt.Compose(chain)
    pipeline.set_random_state(seed=seed)
    return pipeline
