"""A Hugging Face checkpoint's own processor, loadable without torchvision (no video processor).

Qwen2-VL / 2.5-VL, SmolVLM and LLaVA-OneVision processors also hold a video processor, which
needs torchvision; its registry wheel does not import with the CPU torch here, and medvlm never
feeds video. These load as a subclass of the checkpoint's own processor class whose only change is
a constructor without the video processor (transformers derives a processor's parts from its
constructor's arguments): image processor, tokenizer, chat template and settings are the
checkpoint's, loaded by `AutoImageProcessor` / `AutoTokenizer`. Nothing in transformers or
torchvision is patched, and `save_pretrained` still names the checkpoint's class.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

from medvlm.errors import CheckpointError
from medvlm.families import FamilySpec


def load_processor(path: str | Path, family: FamilySpec, *, trust_remote_code: bool = False) -> Any:
    """The checkpoint's processor (`AutoProcessor`); images-only for video-capable families (module docstring)."""
    import transformers

    if not family.video_processor:
        return transformers.AutoProcessor.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust_remote_code
        )
    settings, _ = transformers.ProcessorMixin.get_processor_dict(str(path), local_files_only=True)
    base = getattr(transformers, settings.get("processor_class") or "", None)
    if base is None or "video_processor" not in inspect.signature(base.__init__).parameters:
        raise CheckpointError(f"{path}: processor_class {settings.get('processor_class')!r} is not a known "
                              f"{family.name} processor: re-save the processor with save_pretrained")
    params = inspect.signature(base.__init__).parameters
    kwargs = {k: v for k, v in settings.items()
              if k in params and k not in ("self", "image_processor", "tokenizer", "video_processor")}
    image_processor = transformers.AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return _images_only(base)(image_processor, tokenizer, **kwargs)


def _images_only(base: type) -> type:
    """`base` (a video-capable processor class) constructed without its video processor."""

    class ImagesOnlyProcessor(base):  # type: ignore[misc, valid-type]
        def __init__(self, image_processor: Any, tokenizer: Any, chat_template: str | None = None, **kwargs: Any):
            base.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    # saved processor_config.json names the checkpoint's class, so the folder stays loadable elsewhere
    ImagesOnlyProcessor.__name__ = ImagesOnlyProcessor.__qualname__ = base.__name__
    # `to_dict` saves the attributes named in `__init__`'s signature: show the base's (num_image_tokens,
    # image_seq_len, ...), else a re-saved processor (a fine-tuned checkpoint) loses them.
    sig = inspect.signature(base.__init__)
    ImagesOnlyProcessor.__init__.__signature__ = sig.replace(
        parameters=[p for p in sig.parameters.values() if p.name != "video_processor"])
    return ImagesOnlyProcessor


def nominal_image_size(processor: Any) -> int:
    """A square edge to read images at for this processor (it resizes/tiles them itself afterwards)."""
    ip = processor.image_processor
    size = dict(getattr(ip, "size", None) or {})
    crop = dict(getattr(ip, "crop_size", None) or {}) if getattr(ip, "do_center_crop", False) else {}
    longest = size.get("longest_edge") or dict(getattr(ip, "max_image_size", None) or {}).get("longest_edge")
    if crop.get("height"):
        return int(crop["height"])
    if size.get("height"):
        return int(size["height"])
    if size.get("shortest_edge") and longest and hasattr(ip, "merge_size"):  # Qwen2-VL: pixel counts
        return min(int(math.isqrt(int(longest))), 1024)
    return int(longest or size.get("shortest_edge") or 448)
