"""From a study's images to model inputs: augmentation, tower pixel values, training batches of any family."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.errors import ConfigError
from pipelines.training.sampling import sample_seed

if TYPE_CHECKING:
    from medvlm.build import MedVLM
    from medvlm.config import ModelConfig
    from pipelines.training.datasets import StudyDataset


def augmented_views(images: Sequence[np.ndarray], pipeline: Any, seed: int) -> list[np.ndarray]:
    """Apply the MONAI pipeline (reseeded) to each view; returns float32 (S, S) arrays."""
    if pipeline is None:
        return list(images)
    import torch

    pipeline.set_random_state(seed=seed)
    out = []
    # Data preparation is float32 whatever the training precision: CPU autocast would otherwise run MONAI's
    # tensor ops in bfloat16, which it cannot convert back to numpy (and which would quantise the pixels).
    with torch.autocast("cpu", enabled=False):
        for img in images:
            res = pipeline({"image": img})["image"]
            arr = res.detach().cpu().numpy() if hasattr(res, "detach") else np.asarray(res)
            out.append(np.ascontiguousarray(arr[0], dtype=np.float32))  # (1, S, S) -> (S, S)
    return out


@dataclass(frozen=True)
class TowerInput:
    """How single views become vision-tower input: the fields `pixel_values` reads from a `ModelConfig`."""

    image_size: int
    """Square edge the tower takes (its config's `image_size`)."""
    image_mean: tuple[float, ...]
    """Per-channel mean of the checkpoint's image processor."""
    image_std: tuple[float, ...]
    """Per-channel std of the checkpoint's image processor."""


def pixel_values(images: Sequence[np.ndarray], cfg: ModelConfig | TowerInput) -> Any:
    """Vision-tower input of single views, normalised as the processor does.

    Args:
        images: float [0, 1] views, (S', S') each (resized to `cfg.image_size`).
        cfg: the model config or a loaded tower's `TowerInput` (`image_size`, `image_mean`, `image_std`).

    Returns:
        A float32 tensor (B, 3, S, S).
    """
    import torch

    from medvlm.processor import resize_float

    mean = np.asarray(cfg.image_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(cfg.image_std, dtype=np.float32)[:, None, None]
    arr = np.stack([(np.repeat(resize_float(i, cfg.image_size)[None], 3, 0) - mean) / std for i in images])
    return torch.from_numpy(arr.astype(np.float32))  # (B, 3, S, S)


class ExampleBuilder:
    """Turns dataset indices into a collated training batch of any family (augmented, report or QA target).

    Prompts, answers and batches go through `medvlm.chat`, so each family gets its own chat template,
    processor and end-of-turn (labels only on the answer and that end-of-turn); medvlm's own model
    keeps its processor path.

    Args:
        bundle: the `MedVLM` being trained.
        dataset: the training studies.
        augment: a MONAI pipeline from `build_train_transforms`, or None.
        seed: run seed; each (step, index) gets its own augmentation and QA draw.
        qa_fraction: probability that an example is a question/answer pair instead of the report.
        device: where batches go (the model's device).

    Raises:
        ConfigError: the longest training report does not fit the context (medvlm's own model:
            `model.tokenizer.max_length`; a loaded model: its decoder's `max_position_embeddings`).
    """

    def __init__(
        self, bundle: MedVLM, dataset: StudyDataset, augment: Any, seed: int, qa_fraction: float, device: str
    ) -> None:
        self.bundle = bundle
        self.dataset = dataset
        self.augment = augment
        self.seed = seed
        self.qa_fraction = qa_fraction
        self.device = device
        self.hints = self._findings_hints()
        self._check_longest_fits()

    def _findings_hints(self) -> list[str] | None:
        """Per study, the prompt line of the findings head (None without a head), written from the labeler's
        labels of the study's own report (teacher forcing): the decoder learns that the line is what the report
        says and verbalises it faithfully; drafting then gives it the head's reading (`medvlm.generate`).
        Measured: hints from the head's own (imperfect) reading of the training images taught the decoder to
        half-trust them (demo val+test macro-F1 0.543 with a head at 0.671; tuning notes of train_demo.yaml)."""
        from medvlm.heads import finding_probabilities, findings_hint, targets_from_labels
        from medvlm.labeler import label_report

        head = self.bundle.head
        if head is None:
            return None
        return [findings_hint(finding_probabilities(targets_from_labels(label_report(r.report), head.spec.targets),
                                                    head.spec), head.spec.threshold) for r in self.dataset.records]

    def _check_longest_fits(self) -> None:
        """Encode the longest report once before training, so an overflow fails now, not minutes into a stage."""
        from medvlm import chat
        from medvlm.families import OWN

        records = self.dataset.records
        if not records:
            return
        tok = self.bundle.tokenizer
        longest = max(range(len(records)), key=lambda i: len(tok(records[i].report, add_special_tokens=False)["input_ids"]))
        prompt = chat.encode_study(self.bundle, list(self.dataset.images(longest)),
                                   findings_hint=self.hints[longest] if self.hints else None)
        try:
            chat.encode_training_example(self.bundle, prompt, records[longest].report)
        except ValueError as exc:
            if self.bundle.family.name == OWN:
                fix = "raise model.tokenizer.max_length"
            else:  # the loaded decoder's context, never the from-scratch fields of the YAML
                fix = (f"the loaded model's context is {chat.context_length(self.bundle)} tokens "
                       "(max_position_embeddings): lower data.max_views or use shorter reports")
            raise ConfigError(f"the longest training report does not fit: {exc}; {fix}") from None

    def example(self, index: int, step: int) -> dict[str, Any]:
        """One encoded training example (labels mask the prompt)."""
        from medvlm import chat
        from pipelines.training.datasets import derive_qa_pairs

        s = sample_seed(self.seed, step, index)
        rng = np.random.default_rng(s)
        images = augmented_views(self.dataset.images(index), self.augment, s)
        record = self.dataset.records[index]
        if self.qa_fraction and rng.random() < self.qa_fraction:
            pairs = derive_qa_pairs(record.findings, record.impression, rng)
            pair = pairs[int(rng.integers(len(pairs)))]
            prompt = chat.encode_question(self.bundle, images, pair.question)
            answer = pair.answer
        else:
            prompt = chat.encode_study(self.bundle, images, findings_hint=self.hints[index] if self.hints else None)
            answer = record.report
        return chat.encode_training_example(self.bundle, prompt, answer)

    def batch(self, indices: Sequence[int], step: int) -> dict[str, Any]:
        """Collated, right-padded batch on the model's device: input_ids/attention_mask/labels (B, L),
        pixel_values in the model's dtype, and the family's extra tensors."""
        from medvlm import chat

        return chat.collate(self.bundle, [self.example(i, step) for i in indices], padding_side="right")
