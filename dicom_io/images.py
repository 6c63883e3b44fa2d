"""Plain PNG/JPEG chest images (Pillow), for collections published without DICOM headers.

Such images carry no modality, body part or view, so their `ImageMeta` has
`has_dicom_metadata=False`, view UNKNOWN, and synthetic UIDs derived from the file content
(``2.25.<int>`` UIDs: the same bytes always give the same UIDs, so re-ingesting is idempotent and
a copy of the same image is a duplicate). Each file is its own single-image study.

Intensity: the pixels are already display-ready, so ``auto``/``voi``/``window`` keep them as
they are, scaled by the nominal range of their type (8-bit / 255, 16-bit / 65535): rule
``nominal``. ``percentile`` and ``minmax`` stretch as for DICOM.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from dicom_io.errors import DicomReadError, PixelDataError
from dicom_io.normalise import WINDOWS, normalise_range
from dicom_io.study import ImageMeta

_MAX_PIXELS = 2**28


def _uid(kind: str, digest: str) -> str:
    """A deterministic ``2.25.<128-bit int>`` UID (pydicom's generate_uid ignores entropy under 2.25)."""
    value = hashlib.sha256(f"medvlm-image:{kind}:{digest}".encode()).digest()[:16]
    return f"2.25.{int.from_bytes(value, 'big')}"


def read_image(path: str | Path, *, window: str = "auto") -> tuple[np.ndarray, ImageMeta]:
    """Read a PNG/JPEG image as a grayscale radiograph.

    Args:
        path: the image file.
        window: auto/voi/window (nominal range), percentile, or minmax.

    Returns:
        (pixels, meta): (H, W) float32 in [0, 1], and `ImageMeta` with `has_dicom_metadata=False`.

    Raises:
        ValueError: unknown `window`.
        DicomReadError: missing file or not an image Pillow can read.
        PixelDataError: truncated or implausibly large image data.
    """
    from PIL import Image, UnidentifiedImageError

    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}; got {window!r}")
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DicomReadError(p, f"cannot read the file ({type(exc).__name__})", "check the path and permissions") \
            from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(p) as img:
            if img.width * img.height > _MAX_PIXELS:
                raise PixelDataError(p, f"implausible image size {img.height}x{img.width}", "downscale the image")
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L"):
                arr = np.array(img)
            else:  # RGB, RGBA, P, LA, CMYK ...: to 8-bit luminance
                arr = np.array(img.convert("L"))
    except UnidentifiedImageError:
        raise DicomReadError(p, "not an image file Pillow can read", "convert it to PNG or JPEG") from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow raises these on truncated/corrupt data
        raise PixelDataError(p, f"corrupt or truncated image data ({type(exc).__name__})", "re-export the image") \
            from None
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise PixelDataError(p, f"unexpected image shape {arr.shape}", "use a single-channel or RGB image")
    if window in ("auto", "voi", "window") and arr.dtype.kind in "iu":
        nominal = 255.0 if arr.dtype.itemsize == 1 and arr.max() <= 255 else 65535.0
        pixels = np.clip(arr.astype(np.float32) / nominal, 0.0, 1.0)
        rule = "nominal"
    else:
        pixels, rule = normalise_range(arr, window="minmax" if window == "minmax" else "percentile")
    meta = ImageMeta(
        source_path=str(p.resolve()),
        study_uid=_uid("study", digest),
        series_uid=_uid("series", digest),
        sop_uid=_uid("sop", digest),
        original_shape=(int(arr.shape[0]), int(arr.shape[1])),
        window=rule,
        decoder="pillow",
        has_dicom_metadata=False,
    )
    return pixels.astype(np.float32, copy=False), meta
