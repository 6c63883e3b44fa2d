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

from dicom_io.errors import DicomReadError, ImageTooLarge, PixelDataError
from dicom_io.limits import ENV_FRAME_PIXELS, Limits, sniff
from dicom_io.normalise import WINDOWS, normalise_range
from dicom_io.study import ImageMeta


def _uid(kind: str, digest: str) -> str:
    """A deterministic ``2.25.<128-bit int>`` UID (pydicom's generate_uid ignores entropy under 2.25)."""
    value = hashlib.sha256(f"medvlm-image:{kind}:{digest}".encode()).digest()[:16]
    return f"2.25.{int.from_bytes(value, 'big')}"


def read_image(path: str | Path, *, window: str = "auto",
               limits: Limits | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read a PNG/JPEG image as a grayscale radiograph.

    The signature bytes are checked first and the size from the image header next, so a file that
    is not PNG/JPEG or declares a huge image costs one small read, not a decode.

    Args:
        path: the image file.
        window: auto/voi/window (nominal range), percentile, or minmax.
        limits: `limits.max_frame_pixels` caps width x height; None reads the environment.

    Returns:
        (pixels, meta): (H, W) float32 in [0, 1], and `ImageMeta` with `has_dicom_metadata=False`.

    Raises:
        ValueError: unknown `window`.
        DicomReadError: missing file, not PNG/JPEG, or not an image Pillow can read.
        ImageTooLarge: width x height over `limits.max_frame_pixels`.
        PixelDataError: truncated or corrupt image data.
    """
    from PIL import Image, UnidentifiedImageError

    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}; got {window!r}")
    p = Path(path)
    limits = limits or Limits.from_env()
    if not p.is_file():
        raise DicomReadError(p, "not a regular file", "check the path")
    kind = sniff(p)
    if kind not in ("png", "jpeg"):
        raise DicomReadError(p, f"not a PNG or JPEG image (looks like {kind})", "give DICOM files a .dcm suffix")
    try:
        with Image.open(p) as img:  # reads the header only
            if img.width * img.height > limits.max_frame_pixels:
                raise ImageTooLarge(p, f"image of {img.height}x{img.width} pixels exceeds max_frame_pixels "
                                    f"{limits.max_frame_pixels:,}", f"downscale it, or raise ${ENV_FRAME_PIXELS}",
                                    setting="max_frame_pixels")
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L"):
                arr = np.array(img)
            else:  # RGB, RGBA, P, LA, CMYK ...: to 8-bit luminance
                arr = np.array(img.convert("L"))
    except Image.DecompressionBombError:
        raise ImageTooLarge(p, "image exceeds Pillow's decompression-bomb limit", "downscale it",
                            setting="max_frame_pixels") from None
    except UnidentifiedImageError:
        raise DicomReadError(p, "not an image file Pillow can read", "convert it to PNG or JPEG") from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow raises these on truncated/corrupt data
        raise PixelDataError(p, f"corrupt or truncated image data ({type(exc).__name__})", "re-export the image") \
            from None
    try:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError as exc:
        raise DicomReadError(p, f"cannot read the file ({type(exc).__name__})", "check the path and permissions") \
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
