"""Intensity normalisation of decoded DICOM pixels to float32 in [0, 1].

Order (PS3.3 C.11, the grayscale pipeline): stored values → Modality LUT (LUT or rescale
slope/intercept, `pydicom.pixels.apply_modality_lut`) → VOI (VOI LUT Sequence with
`apply_voi`, or window centre/width with `apply_windowing`, or a data-driven window) → [0, 1]
→ MONOCHROME1 inverted so that 1 is always bright (dense bone white, air black).

`window` selects the VOI step:

* ``"auto"`` (default): the header VOI (VOI LUT Sequence preferred, else the first window
  centre/width); if the header has none, or its window saturates more than 98 % of the pixels to
  one end (a broken or foreign window), a percentile window from the 0.5th to the 99.5th
  percentile of the modality values.
* ``"voi"``: the header VOI, VOI LUT Sequence preferred, taken as it is; percentile if absent.
* ``"window"``: the header window centre/width preferred over a VOI LUT; percentile if absent.
* ``"percentile"``: always the percentile window.
* ``"minmax"``: the full range of the modality values, min → 0, max → 1.

Speed: for integer pixels of at most 16 bits (nearly every radiograph) the whole chain is
computed once on every possible stored value (a 256- or 65536-entry table) with pydicom's own
functions, then applied to the image as one table look-up; percentiles come exactly from a
histogram. Wider or float pixels take the direct path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

WINDOWS = ("auto", "voi", "window", "percentile", "minmax")
PERCENTILES = (0.5, 99.5)
"""Percentile window used when the header has no usable VOI; robust to burnt-in labels and collimation."""
SATURATION_LIMIT = 0.98
"""`auto` rejects a header window that maps more than this share of pixels to a single end."""

_SENTINEL = 1e30  # far outside any real window: its windowed value is the output range end


def _has_voi_lut(ds: Dataset) -> bool:
    seq = ds.get("VOILUTSequence")
    return bool(seq) and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None


def _has_window(ds: Dataset) -> bool:
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def _header_voi(values: np.ndarray, ds: Dataset, *, prefer_lut: bool) -> tuple[np.ndarray, str] | None:
    """Apply the header VOI to modality `values` and scale to [0, 1]; None when the header has none."""
    from pydicom.pixels import apply_voi, apply_windowing

    lut, win = _has_voi_lut(ds), _has_window(ds)
    if lut and (prefer_lut or not win):
        if not np.issubdtype(values.dtype, np.integer):
            values = np.rint(values).astype(np.int64)
        out = apply_voi(values, ds).astype(np.float64)
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        data = np.asarray(ds.VOILUTSequence[0].LUTData if not isinstance(ds.VOILUTSequence[0].LUTData, bytes)
                          else np.frombuffer(ds.VOILUTSequence[0].LUTData, dtype="<u2"), dtype=np.float64)
        lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 2.0 ** int(descriptor[2]) - 1)
        return _scale(out, lo, hi), "voi_lut"
    if win:
        ends = np.array([-_SENTINEL, _SENTINEL], dtype=np.float64)
        with np.errstate(over="ignore", under="ignore"):
            out = apply_windowing(np.concatenate([values.astype(np.float64).ravel(), ends]), ds)
        lo, hi = float(out[-2]), float(out[-1])
        return _scale(out[:-2].reshape(values.shape), lo, hi), "window"
    return None


def _try_header_voi(values: np.ndarray, ds: Dataset, window: str) -> tuple[np.ndarray, str] | None:
    """`_header_voi`; under ``auto`` a malformed VOI (width < 1, odd LUT) counts as absent."""
    try:
        return _header_voi(values, ds, prefer_lut=(window != "window"))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError):
        if window == "auto":
            return None
        raise


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if not np.isfinite(hi - lo) or hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    out = (values.astype(np.float64) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _weighted_percentiles(values: np.ndarray, counts: np.ndarray, qs: tuple[float, float]) -> tuple[float, float]:
    """Percentiles of a histogram: `values` sorted ascending, `counts` their frequencies."""
    cum = np.cumsum(counts)
    total = cum[-1]
    idx = [int(np.searchsorted(cum, q / 100.0 * total, side="left")) for q in qs]
    return float(values[min(idx[0], len(values) - 1)]), float(values[min(idx[1], len(values) - 1)])


def _data_window(values: np.ndarray, counts: np.ndarray, mode: str) -> tuple[float, float]:
    """(lo, hi) of the data-driven window from a histogram of modality values (sorted ascending)."""
    present = counts > 0
    v, c = values[present], counts[present]
    if mode == "minmax":
        return float(v[0]), float(v[-1])
    lo, hi = _weighted_percentiles(v, c, PERCENTILES)
    if hi <= lo:  # near-constant image: fall back to the full range
        return float(v[0]), float(v[-1])
    return lo, hi


def _saturated(mapped: np.ndarray, counts: np.ndarray) -> bool:
    """True when more than SATURATION_LIMIT of the pixels sit at one end of [0, 1]."""
    total = counts.sum()
    if total == 0:
        return False
    return bool(counts[mapped <= 0.0].sum() > SATURATION_LIMIT * total
                or counts[mapped >= 1.0].sum() > SATURATION_LIMIT * total)


def _table_domain(dtype: np.dtype) -> np.ndarray | None:
    """Every value an integer dtype of at most 16 bits can take, ordered by its unsigned view."""
    if dtype.kind not in "iu" or dtype.itemsize > 2:
        return None
    unsigned = np.dtype(f"u{dtype.itemsize}")
    return np.arange(2 ** (8 * dtype.itemsize), dtype=unsigned).view(dtype)


def _map(values: np.ndarray, counts: np.ndarray, ds: Dataset, window: str) -> tuple[np.ndarray, str]:
    """The [0, 1] value of each entry of `values` (modality values), and the rule used."""
    if window in ("auto", "voi", "window"):
        got = _try_header_voi(values, ds, window)
        if got is not None and (window != "auto" or not _saturated(got[0], counts)):
            return got
    mode = "minmax" if window == "minmax" else "percentile"
    lo, hi = _data_window(np.asarray(values, dtype=np.float64), counts, mode)
    return _scale(values, lo, hi), mode


def normalise(arr: np.ndarray, ds: Dataset, *, window: str = "auto") -> tuple[np.ndarray, str]:
    """Map decoded grayscale pixels to float32 in [0, 1], 1 = bright.

    Args:
        arr: (H, W) stored values as returned by pydicom (BitsStored and PixelRepresentation
            already applied by the decoder), or a float array.
        ds: the dataset whose Modality LUT, VOI LUT and photometric interpretation apply.
        window: one of `WINDOWS` (see the module docstring).

    Returns:
        (pixels, rule): (H, W) float32 in [0, 1], and the VOI rule applied
        (voi_lut, window, percentile or minmax).

    Raises:
        ValueError: unknown `window`, or `arr` not 2-D.
    """
    from pydicom.pixels import apply_modality_lut

    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}; got {window!r}")
    if arr.ndim != 2:
        raise ValueError(f"normalise expects a (H, W) array, got shape {arr.shape}")
    domain = _table_domain(arr.dtype)
    if domain is not None:
        index = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
        counts = np.bincount(index.ravel(), minlength=domain.size)
        modality = np.asarray(apply_modality_lut(domain, ds))
        order = np.argsort(modality, kind="stable")
        table = np.empty(domain.size, dtype=np.float32)
        mapped, rule = _map(modality[order], counts[order], ds, window)
        table[order] = mapped
        out = table[index]
    else:
        modality = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        values, counts = np.unique(modality.ravel(), return_counts=True)
        if window in ("auto", "voi", "window"):
            got = _try_header_voi(modality, ds, window)
            if got is not None and (window != "auto" or not _saturated(got[0].ravel(), np.ones(arr.size))):
                out, rule = got
            else:
                lo, hi = _data_window(values, counts, "percentile")
                out, rule = _scale(modality, lo, hi), "percentile"
        else:
            mode = "minmax" if window == "minmax" else "percentile"
            lo, hi = _data_window(values, counts, mode)
            out, rule = _scale(modality, lo, hi), mode
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        out = 1.0 - out
    return np.ascontiguousarray(out, dtype=np.float32), rule


def normalise_range(arr: np.ndarray, *, window: str = "auto") -> tuple[np.ndarray, str]:
    """Normalise pixels that have no DICOM header (PNG/JPEG, SimpleITK fallback) to [0, 1].

    Args:
        arr: (H, W) numeric array.
        window: ``minmax`` for the full range; anything else uses the percentile window.

    Returns:
        (pixels, rule): (H, W) float32 in [0, 1], and ``minmax`` or ``percentile``.
    """
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}; got {window!r}")
    arr = np.asarray(arr)
    domain = _table_domain(arr.dtype)
    if domain is not None:
        counts = np.bincount(arr.view(np.dtype(f"u{arr.dtype.itemsize}")).ravel(), minlength=domain.size)
        order = np.argsort(domain, kind="stable")
        values, counts = domain[order], counts[order]
    else:
        values, counts = np.unique(arr.ravel(), return_counts=True)
    mode = "minmax" if window == "minmax" else "percentile"
    lo, hi = _data_window(values.astype(np.float64), counts, mode)
    return _scale(arr, lo, hi), mode
