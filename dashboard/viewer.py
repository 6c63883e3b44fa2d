"""Image viewing for the dashboard: original DICOM pixels, window/level and zoom as pure numpy.

The viewer does not reuse the model's [0, 1] normalisation: a radiologist adjusts the window on
the *modality values* (stored values after the Modality LUT / rescale slope and intercept), as a
PACS viewer does. Projection radiographs (CR/DX) carry no calibrated unit (unlike CT Hounsfield
units), so the named presets are defined relative to each image's own robust value range (0.5th
to 99.5th percentile) rather than as absolute numbers; "default" is the header's first window
centre/width when present.

Windowing follows the DICOM linear VOI function (PS3.3 C.11.2.1.2); MONOCHROME1 images are
inverted so that bright always means dense.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dicom_io.limits import Limits

PRESETS: dict[str, tuple[float, float] | None] = {
    "default": None,  # the header window (or the full robust range when the header has none)
    "full range": (0.5, 1.0),
    # Lung: the darker (air-filled) half of the range, wide enough to keep vessels visible.
    "lung": (0.35, 0.6),
    # Mediastinum: mid-to-high values, narrower, to separate soft tissue around the heart.
    "mediastinum": (0.62, 0.45),
    # Bone: the brightest values, narrow, for ribs, clavicles and spine.
    "bone": (0.8, 0.35),
}
"""Window presets as (centre, width) fractions of the image's robust range; None = header window."""


class ViewerError(RuntimeError):
    """An image cannot be shown (unreadable file, no pixel data); the message names the file only."""


@dataclass(frozen=True)
class ViewerImage:
    """One view's modality values and what the window controls need to know.

    Attributes:
        values: (H, W) float32 modality values (after Modality LUT / rescale).
        invert: True for MONOCHROME1 (low values are bright).
        header_window: (centre, width) from the header, or None.
        robust_range: (low, high) 0.5th and 99.5th percentile of ``values``.
        value_range: (min, max) of ``values``; slider bounds.
        view: the normalised view (PA, AP, LATERAL, UNKNOWN).
        path: the file shown.
    """

    values: np.ndarray
    invert: bool
    header_window: tuple[float, float] | None
    robust_range: tuple[float, float]
    value_range: tuple[float, float]
    view: str
    path: str


def _first_float(value: object) -> float | None:
    if value is None:
        return None
    try:
        seq = list(value) if not isinstance(value, str | bytes) and hasattr(value, "__iter__") else [value]
        return float(seq[0]) if seq else None
    except (TypeError, ValueError):
        return None


def viewer_image_from_values(
    values: np.ndarray,
    *,
    invert: bool = False,
    header_window: tuple[float, float] | None = None,
    view: str = "UNKNOWN",
    path: str = "",
) -> ViewerImage:
    """Build a ``ViewerImage`` from modality values (used by ``load_viewer_image`` and tests).

    Args:
        values: (H, W) numeric modality values.
        invert: MONOCHROME1.
        header_window: (centre, width) from the header, if any.
        view: the view label.
        path: the source file, for captions.

    Returns:
        The image with its ranges computed.

    Raises:
        ValueError: ``values`` is not 2-D or is empty.
    """
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"viewer expects a non-empty (H, W) array, got shape {arr.shape}")
    lo, hi = (float(v) for v in np.percentile(arr, (0.5, 99.5)))
    vmin, vmax = float(arr.min()), float(arr.max())
    if hi <= lo:
        lo, hi = vmin, max(vmax, vmin + 1.0)
    if header_window is not None and not header_window[1] > 0:
        header_window = None
    return ViewerImage(arr, bool(invert), header_window, (lo, hi), (vmin, max(vmax, vmin + 1.0)), view, path)


def load_viewer_image(path: str | Path, *, limits: Limits | None = None) -> ViewerImage:
    """Read one DICOM file's original pixels as modality values.

    The same caps as ingest (`dicom_io.limits`) are checked from the header before decoding, so
    a decompression bomb costs the dashboard a header read, not gigabytes.

    Args:
        path: the DICOM file.
        limits: pixels per frame, frames, compression ratio; None reads the environment.

    Returns:
        A ``ViewerImage`` (frame 0 of multi-frame instances).

    Raises:
        ViewerError: the file cannot be read or decoded, or is over a cap (the message names the
            path and, for a cap, the setting; never header text).
    """
    from pydicom.pixels import apply_modality_lut, pixel_array

    from dicom_io.errors import DicomIOError, ImageTooLarge
    from dicom_io.limits import check_pixel_budget
    from dicom_io.reader import header_meta, read

    p = Path(path)
    try:
        ds = read(p)
        meta = header_meta(ds, p)
        check_pixel_budget(ds, p, limits)  # before any decode
        arr = pixel_array(ds, index=0)
        if arr.ndim == 3:  # colour: luminance, BT.601 (same rule as dicom_io)
            arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    except ImageTooLarge as exc:
        raise ViewerError(f"cannot show {p}: {type(exc).__name__}, over {exc.setting} ({exc.hint})") from None
    except DicomIOError as exc:
        raise ViewerError(f"cannot show {p}: {type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types; never echo header text
        raise ViewerError(f"cannot show {p}: pixel data not decodable ({type(exc).__name__})") from None
    centre, width = _first_float(ds.get("WindowCenter")), _first_float(ds.get("WindowWidth"))
    header = (centre, width) if centre is not None and width is not None else None
    invert = str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    return viewer_image_from_values(values, invert=invert, header_window=header, view=meta.view, path=str(p))


def preset_window(image: ViewerImage, preset: str) -> tuple[float, float]:
    """Return the (centre, width) of a named preset for this image.

    Args:
        image: the image.
        preset: a key of ``PRESETS``.

    Returns:
        (centre, width) in modality units, width >= 1.

    Raises:
        ValueError: unknown preset.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown window preset {preset!r}; choose one of {', '.join(PRESETS)}")
    lo, hi = image.robust_range
    frac = PRESETS[preset]
    if frac is None:
        if image.header_window is not None:
            return image.header_window
        frac = (0.5, 1.0)
    span = hi - lo
    centre_f, width_f = frac
    if image.invert:  # MONOCHROME1: dense (bright) = low values, so mirror the centre
        centre_f = 1.0 - centre_f
    return lo + centre_f * span, max(width_f * span, 1.0)


def apply_window(values: np.ndarray, centre: float, width: float, *, invert: bool = False) -> np.ndarray:
    """Apply a linear window (DICOM PS3.3 C.11.2.1.2) and return 8-bit display pixels.

    Args:
        values: (H, W) modality values.
        centre: window centre.
        width: window width (values below 1 are treated as 1).
        invert: MONOCHROME1: flip so that dense is bright.

    Returns:
        (H, W) uint8, 0 = black, 255 = white.
    """
    width = max(float(width), 1.0)
    x = np.asarray(values, dtype=np.float64)
    if width == 1.0:
        out = np.where(x <= centre - 0.5, 0.0, 1.0)
    else:
        out = np.clip((x - (centre - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)
    if invert:
        out = 1.0 - out
    return np.rint(out * 255.0).astype(np.uint8)


def zoom_crop(pixels: np.ndarray, factor: float, centre: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """Crop the region a zoom shows: a window 1/``factor`` of each side around ``centre``.

    Args:
        pixels: (H, W) image.
        factor: zoom factor >= 1 (1 = whole image).
        centre: (row, column) centre of the view as fractions of the image, clamped so the crop
            stays inside the image.

    Returns:
        (h, w) crop with h = ceil(H / factor), w = ceil(W / factor).

    Raises:
        ValueError: factor < 1.
    """
    if factor < 1:
        raise ValueError(f"zoom factor must be >= 1, got {factor}")
    h, w = pixels.shape[:2]
    ch, cw = max(1, int(np.ceil(h / factor))), max(1, int(np.ceil(w / factor)))
    r0 = int(round(centre[0] * h - ch / 2))
    c0 = int(round(centre[1] * w - cw / 2))
    r0 = min(max(r0, 0), h - ch)
    c0 = min(max(c0, 0), w - cw)
    return pixels[r0 : r0 + ch, c0 : c0 + cw]


def resize_nearest(pixels: np.ndarray, long_side: int) -> np.ndarray:
    """Resize to a given long side with nearest-neighbour sampling (keeps pixel values exact).

    Args:
        pixels: (H, W) image.
        long_side: target length of the longer side (>= 1).

    Returns:
        (h, w) image, aspect kept.
    """
    h, w = pixels.shape[:2]
    scale = long_side / max(h, w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    rows = np.minimum((np.arange(nh) + 0.5) / scale, h - 1).astype(np.int64)
    cols = np.minimum((np.arange(nw) + 0.5) / scale, w - 1).astype(np.int64)
    return pixels[rows[:, None], cols[None, :]]


def render_view(
    image: ViewerImage,
    *,
    centre: float,
    width: float,
    zoom: float = 1.0,
    pan: tuple[float, float] = (0.5, 0.5),
    display_size: int = 768,
) -> np.ndarray:
    """Window, zoom and size one view for display.

    Args:
        image: the view.
        centre: window centre (modality units).
        width: window width.
        zoom: zoom factor >= 1.
        pan: (row, column) centre of the zoomed view as fractions.
        display_size: long side of the returned image in pixels.

    Returns:
        (h, w) uint8 display pixels, long side ``display_size``.
    """
    crop = zoom_crop(image.values, zoom, pan)
    return resize_nearest(apply_window(crop, centre, width, invert=image.invert), display_size)
