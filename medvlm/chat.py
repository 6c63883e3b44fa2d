"""Model inputs for any family: a study or a question -> one chat message -> the checkpoint's processor.

Every function takes the `MedVLM` bundle and looks at `bundle.family` (`medvlm.families`). medvlm's
own LLaVA keeps its processor-level path (`medvlm.processor`: float resize, `<|end|>` turns, image
token check); every other family goes through its checkpoint's chat template and processor:

    study -> report_messages (current views, prior views, prior report, indication)
          -> chat template (tokenizer.apply_chat_template with the processor's template)
          -> processor(images=uint8 RGB, text=...)   resize / tiles / mean-std / image tokens
          -> encoding: every tensor the processor returns, batch dimension 1 kept

Batches are built by `collate`, which pads token-aligned tensors (dim 1) on the requested side and
zero-pads any other ragged dimension before concatenating along dim 0, the way the processors pad
their own batches (LLaVA-Next patches, Idefics3 images, Mllama tiles), so extra tensors such as
`image_grid_thw`, `image_sizes`, `cross_attention_mask` or `aspect_ratio_ids` pass through untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm import processor as own
from medvlm.families import OWN, FamilySpec
from medvlm.prompts import report_messages, vqa_messages
from medvlm.tokenizer import stop_token_ids

if TYPE_CHECKING:
    from medvlm.bundle import MedVLM

IGNORE_INDEX = own.IGNORE_INDEX
TOKEN_KEYS = ("input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids", "cross_attention_mask")
"""Tensors aligned with the tokens (dim 1 is the sequence): padded on the padding side."""
_FILL = {"labels": IGNORE_INDEX}
_MARK = "MEDVLMANSWERMARK"


@dataclass(frozen=True)
class TurnFormat:
    """How an assistant turn is written, read from the checkpoint's chat template and generation config."""

    answer_prefix: str
    """Text the template puts between the generation prompt and the answer (usually "")."""
    end_of_turn: str
    """Text that closes an assistant turn (`<end_of_turn>`, `<|im_end|>`, `</s>`, ...): the training target's end."""
    stop_token_ids: tuple[int, ...]
    """Ids that end generation: the tokenizer's eos, the generation config's eos ids, the end-of-turn token."""


def render(bundle: MedVLM, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
    """Chat messages -> prompt text, with the checkpoint's template (plain user text when it has none).

    Rendered by the tokenizer with the processor's template: some video-capable processors read
    their (absent) video processor in their own `apply_chat_template`.
    """
    family, proc = bundle.family, bundle.processor
    if not family.system_role and messages and messages[0]["role"] == "system":
        system, first, *rest = messages
        messages = [{"role": first["role"], "content": [*system["content"], _text("\n"), *first["content"]]}, *rest]
    if not family.chat_template:  # PaliGemma's own prompt layout: images, bos, the text, "\n"
        parts = [p for m in messages for p in m["content"]]
        text = " ".join(" ".join(p["text"] for p in parts if p["type"] == "text").split())
        n_images = sum(p["type"] == "image" for p in parts)
        return f"{proc.image_token * n_images}{proc.tokenizer.bos_token or ''}{text}\n"
    return proc.tokenizer.apply_chat_template(
        messages, chat_template=proc.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _clean(bundle: MedVLM, text: str | None) -> str | None:
    """Free text minus every special token string of the tokenizer, so it cannot fake an image or a turn."""
    if text is None:
        return None
    tok = bundle.tokenizer
    specials = {t.content for t in tok.added_tokens_decoder.values() if t.special} | set(tok.all_special_tokens)
    for marker in sorted(specials, key=len, reverse=True):
        text = text.replace(marker, " ")
    return text


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def turn_format(bundle: MedVLM) -> TurnFormat:
    """The bundle's `TurnFormat`: probe the chat template with a marker answer and read what surrounds it."""
    tok = bundle.tokenizer
    if bundle.family.name == OWN:
        return TurnFormat("", "<|end|>", tuple(stop_token_ids(tok)))
    prefix, end = "", tok.eos_token or ""
    if bundle.family.chat_template:
        user = [{"role": "user", "content": [_text("Q")]}]
        prompt = render(bundle, user)
        full = render(bundle, [*user, {"role": "assistant", "content": [_text(_MARK)]}], add_generation_prompt=False)
        before, _, after = full.partition(_MARK)
        prefix = before[len(prompt):] if before.startswith(prompt) else ""
        end = after.rstrip() or end
    stops: list[int] = []
    generation_eos = getattr(getattr(bundle.model, "generation_config", None), "eos_token_id", None)
    for tid in [tok.eos_token_id, *np.atleast_1d(generation_eos if generation_eos is not None else [])]:
        if tid is not None and int(tid) not in stops:
            stops.append(int(tid))
    end_ids = tok(end, add_special_tokens=False)["input_ids"] if end else []
    if len(end_ids) == 1 and end_ids[0] not in stops:
        stops.append(int(end_ids[0]))
    return TurnFormat(prefix, end, tuple(stops))


def as_processor_image(image: np.ndarray, image_processor: Any, what: str = "image") -> np.ndarray:
    """(H, W) float [0, 1] grey -> (H, W, 3) RGB in the range the image processor expects, rescaled once.

    A processor that rescales (`do_rescale`, factor 1/255) gets uint8; one that does not gets the
    [0, 1] floats. Handing it [0, 1] floats AND letting it divide by 255 would feed the model an
    almost black image.

    Raises:
        ValueError: not a 2-D float array with finite values in [0, 1].
    """
    arr = np.asarray(image)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what} must be a 2-D (H, W) float array in [0, 1], got {arr.dtype} {arr.shape}")
    if not np.isfinite(arr).all() or arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise ValueError(f"{what} must hold finite values in [0, 1]")
    arr = np.clip(arr.astype(np.float32), 0.0, 1.0)
    if not getattr(image_processor, "do_resize", True):  # medvlm's own processor saved as a plain folder
        arr = own.resize_float(arr, own.image_target_size(image_processor))
    if getattr(image_processor, "do_rescale", False):
        factor = float(getattr(image_processor, "rescale_factor", 1 / 255))
        arr = np.round(arr * 255).astype(np.uint8) if abs(factor * 255 - 1) < 1e-6 else arr / factor
    return np.repeat(arr[:, :, None], 3, axis=2)  # (H, W, 3)


def _encode(bundle: MedVLM, messages: list[dict], images: list[np.ndarray]) -> dict[str, Any]:
    proc = bundle.processor
    rgb = [as_processor_image(img, proc.image_processor, f"images[{i}]") for i, img in enumerate(images)]
    enc = proc(images=rgb, text=[render(bundle, messages)], return_tensors="pt", add_special_tokens=False)
    enc.pop("labels", None)  # PaliGemma's processor adds its own; ours come from encode_training_example
    return dict(enc)


def _fit_images(family: FamilySpec, images: Sequence[np.ndarray], prior: Sequence[np.ndarray]) -> tuple[list, list]:
    """Current views first, then prior views, cut to what the family takes in one prompt."""
    images = list(images)[: family.max_images]
    return images, list(prior)[: family.max_images - len(images)]


def encode_study(
    bundle: MedVLM,
    images: Sequence[np.ndarray],
    *,
    prior_images: Sequence[np.ndarray] = (),
    prior_report: str | None = None,
    indication: str | None = None,
    findings_hint: str | None = None,
) -> dict[str, Any]:
    """Encode one study as a report-drafting prompt (ends with the generation prompt).

    Args:
        bundle: model + processor + config + family.
        images: 1..max_views float [0, 1] (H, W) arrays, frontal first.
        prior_images: views of a prior study.
        prior_report: the prior study's report.
        indication: clinical indication.
        findings_hint: the findings head's reading for the prompt (`medvlm.heads.findings_hint`).

    Returns:
        For medvlm's own family `medvlm.processor.encode_study`'s dict; otherwise every tensor the
        processor returns, batch dimension 1 kept (`input_ids` (1, L), `pixel_values`, extras).

    Raises:
        ValueError: no image, too many views, or a malformed image.
    """
    cfg = bundle.config
    if bundle.family.name == OWN:
        return own.encode_study(
            bundle.processor, cfg.prompt, images, image_seq_length=bundle.image_seq_length, max_views=cfg.max_views,
            prior_images=prior_images, prior_report=prior_report, indication=indication, findings_hint=findings_hint,
        )
    if not 1 <= len(images) <= cfg.max_views:
        raise ValueError(f"a study needs 1..{cfg.max_views} views (max_views), got {len(images)}")
    current, prior = _fit_images(bundle.family, images, prior_images)
    messages = report_messages(
        len(current), cfg.prompt, n_prior_views=len(prior), prior_report=_clean(bundle, prior_report),
        indication=_clean(bundle, indication), findings_hint=_clean(bundle, findings_hint),
    )
    return _encode(bundle, messages, current + prior)


def encode_question(
    bundle: MedVLM, images: Sequence[np.ndarray], question: str, history: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """Encode a question about a study's images after earlier (question, answer) turns (see `encode_study`)."""
    cfg = bundle.config
    if bundle.family.name == OWN:
        return own.encode_question(
            bundle.processor, cfg.prompt, images, question, image_seq_length=bundle.image_seq_length,
            max_views=cfg.max_views, history=history,
        )
    if not 1 <= len(images) <= cfg.max_views:
        raise ValueError(f"a question needs 1..{cfg.max_views} views (max_views), got {len(images)}")
    current, _ = _fit_images(bundle.family, images, ())
    clean = [(_clean(bundle, q), _clean(bundle, a)) for q, a in (history or [])]
    return _encode(bundle, vqa_messages(len(current), _clean(bundle, question), cfg.prompt, clean), current)


def encode_training_example(
    bundle: MedVLM, prompt_encoding: dict[str, Any], answer: str, *, max_length: int | None = None
) -> dict[str, Any]:
    """Append the target answer and the template's end-of-turn to an encoded prompt; labels only on them.

    Args:
        bundle: the bundle that encoded the prompt.
        prompt_encoding: output of `encode_study` / `encode_question`.
        answer: target text, e.g. `prompts.format_report(findings, impression)`.
        max_length: longest allowed sequence; default `config.tokenizer.max_length` (own family) or
            the loaded decoder's `max_position_embeddings`.

    Returns:
        The encoding plus `labels` (-100 on the prompt), every token-aligned tensor extended.

    Raises:
        ValueError: the example is longer than `max_length`.
    """
    import torch

    if bundle.family.name == OWN:
        return own.encode_training_example(
            bundle.processor, prompt_encoding, answer, max_length=max_length or bundle.config.tokenizer.max_length
        )
    turns = turn_format(bundle)
    text = turns.answer_prefix + _clean(bundle, answer) + turns.end_of_turn
    target = torch.tensor([bundle.tokenizer(text, add_special_tokens=False)["input_ids"]])  # (1, T)
    limit = max_length or context_length(bundle)
    total = prompt_encoding["input_ids"].shape[1] + target.shape[1]
    if total > limit:
        raise ValueError(f"training example has {total} tokens > {limit}: shorten the report or use fewer images")
    out = dict(prompt_encoding)
    for key in TOKEN_KEYS:
        if key not in out:
            continue
        value = out[key]
        shape = (1, target.shape[1], *value.shape[2:])
        if key == "input_ids":
            ext = target
        elif key == "attention_mask":
            ext = torch.ones(shape, dtype=value.dtype)
        elif key == "token_type_ids" and bundle.family.answer_token_type is not None:
            ext = torch.full(shape, bundle.family.answer_token_type, dtype=value.dtype)
        else:  # tokens after the prompt see what its last token saw (Mllama: the images)
            ext = value[:, -1:].expand(shape)
        out[key] = torch.cat([value, ext], dim=1)  # (1, L + T, ...)
    out["labels"] = torch.cat([torch.full_like(prompt_encoding["input_ids"], IGNORE_INDEX), target], dim=1)
    return out


def context_length(bundle: MedVLM) -> int:
    """The loaded decoder's context length (`max_position_embeddings` of the text config)."""
    text_config = bundle.base_model.config.get_text_config()
    return int(getattr(text_config, "max_position_embeddings", 0) or bundle.config.tokenizer.max_length)


def collate(bundle: MedVLM, encodings: Sequence[dict[str, Any]], *, padding_side: str = "right") -> dict[str, Any]:
    """Pad encodings into one batch of model inputs (left padding for generation, right for training).

    Returns:
        Model inputs on the model's device: `input_ids` (B, L), `attention_mask` (B, L), `labels`
        (B, L) when every encoding has them, `pixel_values` in the model's dtype, the family's extras.
    """
    import torch

    if bundle.family.name == OWN:
        batch = own.collate(encodings, bundle.tokenizer.pad_token_id, padding_side=padding_side)
        batch.pop("n_images")
    else:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
        pad_id = bundle.tokenizer.pad_token_id
        pad_id = bundle.tokenizer.eos_token_id if pad_id is None else pad_id
        keys = [k for k in encodings[0] if all(k in e for e in encodings)]
        batch = {k: _pad_cat([e[k] for e in encodings], k, padding_side, pad_id) for k in keys}
    dtype, device = bundle.base_model.dtype, bundle.base_model.device
    return {
        k: v.to(device, dtype) if k.startswith("pixel_values") and torch.is_floating_point(v) else v.to(device)
        for k, v in batch.items()
    }


def _pad_cat(values: list[Any], key: str, side: str, pad_id: int) -> Any:
    """Concatenate along dim 0 after padding every other dim to the largest (dim 1 on `side` for token keys)."""
    import torch

    if not isinstance(values[0], torch.Tensor) or values[0].dim() == 0:
        return torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    fill = pad_id if key == "input_ids" else _FILL.get(key, 0)
    shape = [max(v.shape[d] for v in values) for d in range(values[0].dim())]
    out = []
    for v in values:
        pads: list[int] = []  # F.pad order: last dim first, (before, after) each
        for d in range(v.dim() - 1, 0, -1):
            missing = shape[d] - v.shape[d]
            pads += [missing, 0] if (d == 1 and key in TOKEN_KEYS and side == "left") else [0, missing]
        out.append(torch.nn.functional.pad(v, pads, value=fill) if any(pads) else v)
    return torch.cat(out)
