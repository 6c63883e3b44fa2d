"""From a study's images to model inputs: augmentation, tower pixel values, LLaVA training batches."""

from __future__ import annotations

from collections.abc import Sequence
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


def pixel_values(images: Sequence[np.ndarray], cfg: ModelConfig) -> Any:
    """Vision-tower input of single views, normalised as the processor does.

    Args:
        images: float [0, 1] views, (S', S') each (resized to `cfg.image_size`).
        cfg: the model config (`image_size`, `image_mean`, `image_std`).

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
    """Turns dataset indices into a collated LLaVA training batch (augmented, report or QA target).

    Args:
        bundle: the `MedVLM` being trained.
        dataset: the training studies.
        augment: a MONAI pipeline from `build_train_transforms`, or None.
        seed: run seed; each (step, index) gets its own augmentation and QA draw.
        qa_fraction: probability that an example is a question/answer pair instead of the report.
        device: where batches go.

    Raises:
        ConfigError: the longest training report does not fit `model.tokenizer.max_length`.
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
        self._check_longest_fits()

    def _check_longest_fits(self) -> None:
        """Encode the longest report once before training, so an overflow fails now, not minutes into a stage."""
        from medvlm.processor import encode_study, encode_training_example

        records = self.dataset.records
        if not records:
            return
        tok = self.bundle.tokenizer
        longest = max(range(len(records)), key=lambda i: len(tok(records[i].report, add_special_tokens=False)["input_ids"]))
        cfg = self.bundle.config
        images = list(self.dataset.images(longest))
        prompt = encode_study(self.bundle.processor, cfg.prompt, images, image_seq_length=self.bundle.image_seq_length,
                              max_views=cfg.max_views)
        try:
            encode_training_example(self.bundle.processor, prompt, records[longest].report,
                                    max_length=cfg.tokenizer.max_length)
        except ValueError as exc:
            raise ConfigError(f"the longest training report does not fit: {exc}; "
                              "raise model.tokenizer.max_length") from None

    def example(self, index: int, step: int) -> dict[str, Any]:
        """One encoded training example (labels mask the prompt)."""
        from medvlm.processor import encode_question, encode_study, encode_training_example
        from pipelines.training.datasets import derive_qa_pairs

        cfg = self.bundle.config
        s = sample_seed(self.seed, step, index)
        rng = np.random.default_rng(s)
        images = augmented_views(self.dataset.images(index), self.augment, s)
        record = self.dataset.records[index]
        common = {"image_seq_length": self.bundle.image_seq_length, "max_views": cfg.max_views}
        if self.qa_fraction and rng.random() < self.qa_fraction:
            pairs = derive_qa_pairs(record.findings, record.impression, rng)
            pair = pairs[int(rng.integers(len(pairs)))]
            prompt = encode_question(self.bundle.processor, cfg.prompt, images, pair.question, **common)
            answer = pair.answer
        else:
            prompt = encode_study(self.bundle.processor, cfg.prompt, images, **common)
            answer = record.report
        return encode_training_example(self.bundle.processor, prompt, answer, max_length=cfg.tokenizer.max_length)

    def batch(self, indices: Sequence[int], step: int) -> dict[str, Any]:
        """Collated batch on the device: input_ids/attention_mask/labels (B, L), pixel_values (sum V, 3, S, S)."""
        from medvlm.processor import collate

        batch = collate([self.example(i, step) for i in indices], self.bundle.tokenizer.pad_token_id)
        batch.pop("n_images")
        batch["pixel_values"] = batch["pixel_values"].to(self.bundle.llava.dtype)
        return {k: v.to(self.device) for k, v in batch.items()}
