"""Tiny-model fixtures for the model package: a small report corpus, a trained BPE, tiny bundles."""

from __future__ import annotations

import numpy as np
import pytest

REPORTS = [
    ("The heart is normal in size. The lungs are clear.", "No acute cardiopulmonary disease."),
    ("The heart is enlarged. Small left pleural effusion.", "Cardiomegaly with small left effusion."),
    ("Right upper lobe consolidation. No pneumothorax.", "Right upper lobe pneumonia."),
    ("Large right pneumothorax. Mediastinal shift to the left.", "Tension pneumothorax."),
    ("Endotracheal tube 4 cm above the carina. Lungs clear.", "Support devices in place."),
]


def report_corpus() -> list[str]:
    """Report texts (formatted like the model's answers) plus questions, to train the tiny BPE."""
    texts = []
    for findings, impression in REPORTS:
        texts.append(f"FINDINGS: {findings}\nIMPRESSION: {impression}")
    texts += ["Is there a pleural effusion?", "Yes.", "No.", "Indication: cough and fever."]
    return texts * 4


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE trained on the tiny corpus (about 400 tokens)."""
    from medvlm.tokenizer import train_report_tokenizer

    return train_report_tokenizer(report_corpus(), vocab_size=400)


@pytest.fixture
def tiny_cfg():
    """Factory: a tiny `ModelConfig` with nested overrides, e.g. tiny_cfg(vision={"kind": "siglip"})."""
    from medvlm.config import ModelConfig

    def _make(**sections):
        base = {"image_size": 32, "generation": {"max_new_tokens": 8}}
        for key, value in sections.items():
            if isinstance(value, dict):
                base.setdefault(key, {}).update(value)
            else:
                base[key] = value
        return ModelConfig.from_dict(base)

    return _make


@pytest.fixture
def build_tiny(tiny_tokenizer, tiny_cfg):
    """Factory: a tiny `MedVLM` bundle built from config overrides (randomly initialised, seed 0)."""
    from medvlm.build import build_model

    def _build(**sections):
        return build_model(tiny_cfg(**sections), tiny_tokenizer)

    return _build


@pytest.fixture
def make_image():
    """Factory: a float32 [0, 1] grayscale (H, W) image from its own seeded RNG."""

    def _make(seed: int = 0, shape: tuple[int, int] = (40, 36)) -> np.ndarray:
        return np.random.default_rng(seed).random(shape, dtype=np.float32)

    return _make


@pytest.fixture
def perturb_lora():
    """Function giving LoRA B matrices random values (peft initialises them to zero: no effect)."""
    import torch

    def _perturb(model, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.5)

    return _perturb
