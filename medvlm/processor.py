"""Processor: images + prompt text -> model inputs, with a standard `LlavaProcessor`.

Images come from the DICOM side already normalised: float32 arrays in [0, 1], shape (H, W),
grayscale. They are resized to `image_size` in float (no 8-bit quantisation), replicated to 3
channels and normalised with the tower's mean/std; medvlm's own processor has no /255 rescale
(`do_rescale=False`), a pretrained checkpoint's processor gets uint8 (one rescale only).
Other families encode through `medvlm.chat`, which dispatches here for medvlm's own LLaVA.

A study becomes one `<image>` per view in the chat template; the processor expands each to
`image_seq_length` placeholder tokens that `LlavaModel` fills with projected image features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.config import ModelConfig, PromptConfig
from medvlm.errors import ImageTokenMismatchError
from medvlm.prompts import CHAT_TEMPLATE, END_OF_TURN, report_messages, vqa_messages
from medvlm.tokenizer import IMAGE_TOKEN, ROLE_TOKENS, image_token_id

if TYPE_CHECKING:
    import torch
    from transformers import LlavaProcessor, PreTrainedTokenizerBase

IGNORE_INDEX = -100
"""Label value ignored by the loss (prompt and padding positions)."""


def has_cls_token(kind: str) -> bool:
    """Whether a tower family prepends a CLS token (SigLIP does not)."""
    return kind != "siglip"


def build_processor(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> LlavaProcessor:
    """A `LlavaProcessor` for the config: Pil image processor (no torchvision) + tokenizer + chat template.

    Every tower gets a plain resize to a square `image_size` (ViT/SigLIP-style): CLIP's and DINOv2's
    own processors resize the short edge then centre-crop, which would cut the costophrenic angles
    off a non-square radiograph.

    Args:
        cfg: model config (image size, mean/std, tower kind, patch size).
        tokenizer: tokenizer with `<image>`.

    Returns:
        The processor; `save_pretrained` / `AutoProcessor.from_pretrained` round-trip it.
    """
    from transformers import LlavaProcessor, SiglipImageProcessorPil, ViTImageProcessorPil

    kind = cfg.vision.kind
    cls = SiglipImageProcessorPil if kind == "siglip" else ViTImageProcessorPil
    image_processor = cls(
        size={"height": cfg.image_size, "width": cfg.image_size},
        # The Pil backend resizes through 8-bit PIL images (it would quantise our float pixels to
        # 256 levels); `encode_study` resizes in float32 (torch, antialiased bilinear) instead.
        do_resize=False,
        do_rescale=False,  # pixels are already [0, 1] floats
        do_normalize=True,
        image_mean=list(cfg.image_mean),
        image_std=list(cfg.image_std),
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=cfg.vision.patch_size,
        vision_feature_select_strategy="default" if has_cls_token(kind) else "full",
        num_additional_image_tokens=1 if has_cls_token(kind) else 0,
        chat_template=CHAT_TEMPLATE,
    )


def resize_float(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W) float32 image to (size, size) without quantising (antialiased bilinear, torch)."""
    import torch

    if image.shape == (size, size):
        return image
    t = torch.from_numpy(np.ascontiguousarray(image))[None, None]  # (1, 1, H, W)
    t = torch.nn.functional.interpolate(
        t, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return t[0, 0].clamp_(0.0, 1.0).numpy()  # (size, size)


def target_size(processor: LlavaProcessor) -> int:
    """Square edge the tower expects, from the image processor (crop size, else size)."""
    return image_target_size(processor.image_processor)


def image_target_size(ip: Any) -> int:
    """Square edge an image processor resizes to (crop size, else size)."""
    for spec in (getattr(ip, "crop_size", None) if getattr(ip, "do_center_crop", False) else None, ip.size):
        if spec is None:
            continue
        get = spec.get if isinstance(spec, dict) else lambda k, _s=spec: getattr(_s, k, None)
        edge = get("height") or get("shortest_edge")
        if edge:
            return int(edge)
    raise ValueError("the image processor names no target size (size.height or size.shortest_edge)")


def _to_rgb(images: Sequence[np.ndarray], what: str, size: int) -> list[np.ndarray]:
    """(H, W) float [0, 1] -> (size, size, 3) float32; anything else raises ValueError naming the image."""
    out = []
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.ndim != 2:
            raise ValueError(f"{what}[{i}] must be a 2-D (H, W) grayscale array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(
                f"{what}[{i}] must be float in [0, 1] (normalised by dicom_io), got dtype {arr.dtype}"
            )
        if not np.isfinite(arr).all() or arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
            raise ValueError(f"{what}[{i}] must hold finite values in [0, 1]")
        arr = resize_float(np.clip(arr.astype(np.float32), 0.0, 1.0), size)
        out.append(np.repeat(arr[:, :, None], 3, axis=2))  # (H, W, 3)
    return out


def _for_processor(images: list[np.ndarray], processor: LlavaProcessor) -> list[np.ndarray]:
    """[0, 1] floats as the image processor expects them: one rescale only.

    medvlm's own processor does not rescale (`do_rescale=False`) and gets the floats; a pretrained
    checkpoint's processor (`init_from`) divides by 255 and gets uint8, else a 0-1 ramp would reach
    the model as a nearly black image.
    """
    if not getattr(processor.image_processor, "do_rescale", False):
        return images
    return [np.round(img * 255).astype(np.uint8) for img in images]


def sanitize(text: str | None) -> str | None:
    """Remove the image placeholder and role markers from free text, so it cannot fake an image or a turn."""
    if text is None:
        return None
    for marker in (IMAGE_TOKEN, *ROLE_TOKENS):
        text = text.replace(marker, " ")
    return text


def check_image_tokens(input_ids: torch.Tensor, n_images: int, image_seq_length: int, token_id: int) -> None:
    """Raise `ImageTokenMismatchError` (a ValueError) unless the prompt holds one placeholder per image feature.

    Args:
        input_ids: (B, L) or (L,) token ids.
        n_images: images (views) that go with these ids.
        image_seq_length: features per image.
        token_id: the `<image>` token id.
    """
    n_tokens = int((input_ids == token_id).sum())
    n_features = n_images * image_seq_length
    if n_tokens != n_features:
        raise ImageTokenMismatchError(
            f"image tokens in the prompt ({n_tokens}) != image features ({n_images} images x "
            f"{image_seq_length} = {n_features}): the processor's patch_size/image size and the model's "
            "image_seq_length disagree, or the text holds a stray <image>"
        )


def _encode(
    processor: LlavaProcessor,
    messages: list[dict],
    images: list[np.ndarray],
    image_seq_length: int,
) -> dict[str, Any]:
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = processor(images=_for_processor(images, processor), text=text, return_tensors="pt", add_special_tokens=False)
    check_image_tokens(enc["input_ids"], len(images), image_seq_length, image_token_id(processor.tokenizer))
    return {
        "input_ids": enc["input_ids"][0],  # (L,)
        "attention_mask": enc["attention_mask"][0],  # (L,)
        "pixel_values": enc["pixel_values"],  # (V, 3, S, S)
    }


def encode_study(
    processor: LlavaProcessor,
    prompt: PromptConfig,
    images: Sequence[np.ndarray],
    *,
    image_seq_length: int,
    max_views: int,
    prior_images: Sequence[np.ndarray] | None = None,
    prior_report: str | None = None,
    indication: str | None = None,
    findings_hint: str | None = None,
) -> dict[str, Any]:
    """Encode one study as a report-drafting prompt (ends with the assistant marker).

    Args:
        processor: the model's processor.
        prompt: wording.
        images: 1..max_views float [0, 1] arrays (H, W): frontal, lateral, ...
        image_seq_length: image tokens per view (`ModelConfig.image_seq_length`).
        max_views: most views per study (current and prior each).
        prior_images: views of a prior study, if any.
        prior_report: the prior study's report.
        indication: clinical indication.
        findings_hint: the findings head's reading for the prompt (`medvlm.heads.findings_hint`).

    Returns:
        dict with `input_ids` (L,), `attention_mask` (L,), `pixel_values` (V + V_prior, 3, S, S).

    Raises:
        ValueError: no image, too many views, a malformed image, or image tokens != image features
            (`ImageTokenMismatchError`, with both numbers).
    """
    prior_images = list(prior_images or [])
    if not 1 <= len(images) <= max_views:
        raise ValueError(f"a study needs 1..{max_views} views (max_views), got {len(images)}")
    if len(prior_images) > max_views:
        raise ValueError(
            f"a prior study may have at most {max_views} views (max_views), got {len(prior_images)}"
        )
    size = target_size(processor)
    rgb = _to_rgb(images, "images", size) + _to_rgb(prior_images, "prior_images", size)
    messages = report_messages(
        len(images),
        prompt,
        n_prior_views=len(prior_images),
        prior_report=sanitize(prior_report),
        indication=sanitize(indication),
        findings_hint=sanitize(findings_hint),
    )
    return _encode(processor, messages, rgb, image_seq_length)


def encode_question(
    processor: LlavaProcessor,
    prompt: PromptConfig,
    images: Sequence[np.ndarray],
    question: str,
    *,
    image_seq_length: int,
    max_views: int,
    history: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Encode a question about a study's images after earlier (question, answer) turns.

    Returns:
        dict with `input_ids` (L,), `attention_mask` (L,), `pixel_values` (V, 3, S, S).
    """
    if not 1 <= len(images) <= max_views:
        raise ValueError(f"a question needs 1..{max_views} views (max_views), got {len(images)}")
    clean_history = [(sanitize(q), sanitize(a)) for q, a in (history or [])]
    messages = vqa_messages(len(images), sanitize(question), prompt, clean_history)
    size = target_size(processor)
    return _encode(processor, messages, _to_rgb(images, "images", size), image_seq_length)


def encode_training_example(
    processor: LlavaProcessor,
    prompt_encoding: dict[str, Any],
    answer: str,
    *,
    max_length: int,
) -> dict[str, Any]:
    """Append the target answer to an encoded prompt and mask the prompt in the labels.

    Only the answer tokens (the report, then the end-of-turn marker and eos) are supervised.

    Args:
        processor: the model's processor.
        prompt_encoding: output of `encode_study` / `encode_question`.
        answer: target text, e.g. `prompts.format_report(findings, impression)`.
        max_length: longest allowed sequence (`tokenizer.max_length`).

    Returns:
        dict with `input_ids` (L,), `attention_mask` (L,), `labels` (L,; -100 on the prompt),
        `pixel_values` (V, 3, S, S).

    Raises:
        ValueError: the example is longer than `max_length` (truncating would cut image tokens or the report).
    """
    import torch

    tok = processor.tokenizer
    target = tok(sanitize(answer) + END_OF_TURN, add_special_tokens=False)["input_ids"]
    if tok.eos_token_id is not None:
        target = [*target, tok.eos_token_id]
    target_ids = torch.tensor(target, dtype=torch.long)
    prompt_ids = prompt_encoding["input_ids"]
    input_ids = torch.cat([prompt_ids, target_ids])  # (L_prompt + L_answer,)
    if input_ids.numel() > max_length:
        raise ValueError(
            f"training example has {input_ids.numel()} tokens > tokenizer.max_length={max_length}: "
            "raise tokenizer.max_length or shorten the report / lower image_size"
        )
    labels = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), target_ids])
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "pixel_values": prompt_encoding["pixel_values"],
    }


def collate(
    examples: Sequence[dict[str, Any]], pad_token_id: int, *, padding_side: str = "right"
) -> dict[str, Any]:
    """Pad encodings into a batch; pixel values of all studies are concatenated in batch order.

    `LlavaModel` fills placeholder tokens row by row, so images must follow the batch order of
    their prompts: study 0's views first, then study 1's, and so on.

    Args:
        examples: outputs of `encode_study` or `encode_training_example`.
        pad_token_id: id written into padding positions (labels get -100 there).
        padding_side: "right" for training, "left" for generation.

    Returns:
        dict with `input_ids` (B, L), `attention_mask` (B, L), `pixel_values` (sum V, 3, S, S),
        `labels` (B, L) when the examples have labels, and `n_images` (list of V per study).
    """
    import torch

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
    length = max(int(e["input_ids"].numel()) for e in examples)
    with_labels = all("labels" in e for e in examples)
    batch: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    for e in examples:
        pad = length - int(e["input_ids"].numel())
        fills = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        for key in (
            ("input_ids", "attention_mask", "labels") if with_labels else ("input_ids", "attention_mask")
        ):
            filler = torch.full((pad,), fills[key], dtype=e[key].dtype)
            parts = [filler, e[key]] if padding_side == "left" else [e[key], filler]
            batch[key].append(torch.cat(parts))
    out: dict[str, Any] = {
        "input_ids": torch.stack(batch["input_ids"]),  # (B, L)
        "attention_mask": torch.stack(batch["attention_mask"]),  # (B, L)
        "pixel_values": torch.cat([e["pixel_values"] for e in examples]),  # (sum V, 3, S, S)
        "n_images": [int(e["pixel_values"].shape[0]) for e in examples],
    }
    if with_labels:
        out["labels"] = torch.stack(batch["labels"])  # (B, L)
    return out
