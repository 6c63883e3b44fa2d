"""Read DICOM files and turn them into normalised pixels plus PHI-free metadata.

Two steps, MONAI reader style: `read(path) -> Dataset` parses the file (header and, lazily, the
pixel data), `get_data(ds) -> (pixels, meta)` decodes, converts and normalises one frame.
`load_image(path, size=...)` does both (and PNG/JPEG) and resizes for the model.

Decoding uses pydicom 3 with its plugins: the native decoders (little/big endian, implicit or
explicit VR, deflated, RLE), pylibjpeg-libjpeg (JPEG baseline, extended, lossless),
pyjpegls (JPEG-LS), pylibjpeg-openjpeg (JPEG 2000, HTJ2K). When pydicom cannot decode a file,
SimpleITK (GDCM) is tried (always when no pydicom decoder is installed for the transfer syntax,
on decoding errors only if asked); if both fail the error says which decoder to install.

Conventions (documented choices):

* Multi-frame instances: one frame is returned, the first by default (`frame=`); `ImageMeta`
  says how many frames the instance has.
* Colour images (RGB, YBR, PALETTE COLOR) are turned into luminance (ITU-R BT.601 weights);
  the header VOI does not apply to them, so they get the percentile (or min-max) window.
* Every failure is a `DicomIOError` subclass whose message names the file and what to do.
  Messages carry the type of the underlying exception, never its text (which may quote header
  values, i.e. PHI).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from dicom_io.errors import DicomIOError, DicomReadError, PixelDataError, UnsupportedTransferSyntax
from dicom_io.limits import Limits, check_pixel_budget, parse_guard, sniff
from dicom_io.normalise import WINDOWS, normalise, normalise_range
from dicom_io.study import ImageMeta, meta_from_dataset

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

MAX_PIXELS = 2**28
"""Refuse to decode more samples than this in all frames together (`dicom_io.limits` caps each frame)."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""File suffixes `load_image` reads with Pillow instead of pydicom."""

_REEXPORT = "re-export the image from the PACS or modality"
_PLUGINS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg + pylibjpeg-libjpeg (or Pillow)",        # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg + pylibjpeg-libjpeg",                     # JPEG extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg + pylibjpeg-libjpeg",                     # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg + pylibjpeg-libjpeg",                     # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "pyjpegls (or pylibjpeg-libjpeg)",                   # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls (or pylibjpeg-libjpeg)",                   # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg + pylibjpeg-openjpeg",                    # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg + pylibjpeg-openjpeg",                    # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg + pylibjpeg-openjpeg",                   # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg + pylibjpeg-openjpeg",                   # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg + pylibjpeg-openjpeg",                   # HTJ2K
    "1.2.840.10008.1.2.5": "numpy (built in) or pylibjpeg-rle",                    # RLE lossless
}
_NO_PLUGIN = ("no Python decoder exists for it: ask the sender to transcode to Explicit VR Little Endian "
              "or JPEG 2000 Lossless")


def plugin_for(uid: str) -> str:
    """Human hint naming the package(s) that decode transfer syntax `uid`."""
    plugin = _PLUGINS.get(str(uid))
    return f"install {plugin}" if plugin else _NO_PLUGIN


def read(path: str | Path, *, stop_before_pixels: bool = False) -> Dataset:
    """Parse a DICOM file.

    The first bytes are checked first (`dicom_io.limits.sniff`): a file that cannot be DICOM is
    refused after one small read, whatever its size. Files without preamble or File Meta (old
    ACR-NEMA style) are accepted when the parsed data set looks like DICOM (it has a SOP/Study
    UID, Modality or Pixel Data). Parsing stops at the first element that cannot occur in a file
    (`dicom_io.limits.parse_guard`), so zero-filled tails cost milliseconds.

    Args:
        path: the file.
        stop_before_pixels: parse the header only (faster; `get_data` then cannot decode).

    Returns:
        The dataset; pixel data is decoded later by `get_data`.

    Raises:
        DicomReadError: missing file, a folder or other non-regular file, not DICOM, or a
            corrupt/truncated header.
    """
    p = Path(path)
    if not p.exists():
        raise DicomReadError(p, "file not found", "check the path")
    if p.is_dir():
        raise DicomReadError(p, "is a folder, not a file", "pass a file, or use `medvlm ingest` for folders")
    if not p.is_file():
        raise DicomReadError(p, "not a regular file (FIFO, socket or device)", "remove it from the folder")
    kind = sniff(p)
    if kind != "dicom":
        raise DicomReadError(p, f"a {kind.upper()} image, not DICOM", "give PNG/JPEG files a .png/.jpg suffix")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on every oddity; failures are raised below
        try:
            return _parse(p, stop_before_pixels, force=False)
        except InvalidDicomError:
            pass
        except DicomIOError:
            raise
        except Exception as exc:  # untrusted bytes: any parser failure means a corrupt file
            raise DicomReadError(p, f"corrupt or truncated DICOM header ({type(exc).__name__})", _REEXPORT) from None
        try:
            ds = _parse(p, stop_before_pixels, force=True)
            looks_dicom = any(k in ds for k in ("SOPInstanceUID", "StudyInstanceUID", "Modality", "PixelData"))
        except DicomIOError:
            raise
        except Exception:  # noqa: BLE001 - forced parsing of arbitrary bytes may fail in any way
            looks_dicom = False
    if not looks_dicom:
        raise DicomReadError(p, "not a DICOM file (no DICM prefix and no DICOM elements)",
                             "remove it from the folder, or convert it to DICOM; PNG/JPEG need a .png/.jpg suffix")
    return ds


def _parse(p: Path, stop_before_pixels: bool, force: bool) -> Dataset:
    """`pydicom.dcmread` with `parse_guard` as the stop condition."""
    from pydicom.filereader import read_partial

    with p.open("rb") as fh:
        return read_partial(fh, stop_when=parse_guard(p, stop_before_pixels), force=force)


def _transfer_syntax(ds: Dataset, path: str | None) -> UID:
    """The dataset's transfer syntax; inferred from the parsed encoding for native data without File Meta."""
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if tsyntax:
        return UID(str(tsyntax))
    encoding = getattr(ds, "original_encoding", (None, None))
    pixel_elem = ds["PixelData"] if "PixelData" in ds else None
    if pixel_elem is not None and not pixel_elem.is_undefined_length and None not in encoding:
        implicit, little = encoding
        if implicit and little:
            return pydicom.uid.ImplicitVRLittleEndian
        return pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
    raise DicomReadError(path, "no Transfer Syntax UID and the pixel data encoding cannot be inferred",
                         "add File Meta Information (e.g. `dcmconv`) or " + _REEXPORT)


def _decode(ds: Dataset, path: str | None, frame: int, fallback: bool,
            fallback_on_error: bool) -> tuple[np.ndarray, str]:
    """Decode one frame: pydicom first, SimpleITK second. Returns (array, decoder name)."""
    from pydicom.pixels import get_decoder, pixel_array

    tsyntax = _transfer_syntax(ds, path)
    if not ds.file_meta.get("TransferSyntaxUID"):
        ds.file_meta.TransferSyntaxUID = tsyntax
    try:
        available = get_decoder(tsyntax).is_available
    except NotImplementedError:
        available = False
    error_type = ""
    if available:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return pixel_array(ds, index=frame), "pydicom"
        except Exception as exc:  # noqa: BLE001 - decoders raise many types on corrupt data
            error_type = type(exc).__name__
    wanted = fallback if not available else fallback_on_error
    if wanted and path is not None and Path(path).is_file():
        from dicom_io.sitk_reader import read_pixels

        try:
            if frame == 0:
                return read_pixels(path), "simpleitk"
        except PixelDataError:
            pass
    if not available:
        name = tsyntax.name if tsyntax.is_transfer_syntax else "unknown transfer syntax"
        raise UnsupportedTransferSyntax(path, f"no installed decoder for {name} ({tsyntax})", plugin_for(tsyntax))
    raise PixelDataError(path, f"pixel data could not be decoded ({error_type})",
                         "the pixel data is corrupt or does not match Rows/Columns/Bits Allocated; " + _REEXPORT)


def _luminance(arr: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB → (H, W) luminance (BT.601), kept in the input's integer type when it has one."""
    lum = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    if np.issubdtype(arr.dtype, np.integer):
        return np.rint(lum).astype(arr.dtype)
    return lum.astype(np.float32)


def _grayscale(arr: np.ndarray, ds: Dataset, decoder: str) -> tuple[np.ndarray, bool]:
    """(H, W) single-channel array and whether the image was colour."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if decoder == "pydicom" and photometric == "PALETTE COLOR" and arr.ndim == 2:
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return _luminance(arr[..., :3]), True
    if arr.ndim == 3 and arr.shape[-1] == 1:
        return arr[..., 0], False
    if arr.ndim != 2:
        raise PixelDataError(ds.filename if isinstance(ds.filename, str) else None,
                             f"unexpected decoded pixel shape {arr.shape}", _REEXPORT)
    return arr, False


def _voi_header(ds: Dataset) -> Dataset:
    """A header with only the VOI/photometric elements (for values GDCM already rescaled)."""
    from pydicom.dataset import Dataset

    out = Dataset()
    for keyword in ("PhotometricInterpretation", "WindowCenter", "WindowWidth", "VOILUTFunction",
                    "VOILUTSequence", "BitsStored", "PixelRepresentation"):
        if keyword in ds:
            setattr(out, keyword, ds[keyword].value)
    return out


def header_meta(ds: Dataset, path: str | Path | None = None) -> ImageMeta:
    """PHI-free `ImageMeta` from the header alone (no pixel decoding), e.g. to gate before decoding.

    Raises:
        DicomReadError: a header element cannot be parsed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return meta_from_dataset(ds, path)
    except Exception as exc:  # noqa: BLE001 - lazily converted header values of untrusted files
        raise DicomReadError(str(path) if path is not None else None,
                             f"unreadable header element ({type(exc).__name__})", _REEXPORT) from None


def get_data(ds: Dataset, *, window: str = "auto", frame: int = 0, path: str | Path | None = None,
             fallback: bool = True, fallback_on_error: bool = False,
             limits: Limits | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Decode and normalise one frame of a dataset.

    Args:
        ds: a dataset from `read`.
        window: intensity rule, one of auto, voi, window, percentile, minmax (see `dicom_io.normalise`).
        frame: which frame of a multi-frame instance (0 = first).
        path: the file, for messages and the SimpleITK fallback; default `ds.filename`.
        fallback: try SimpleITK (first frame only) when pydicom has no decoder for the transfer syntax.
        fallback_on_error: also try SimpleITK when pydicom's decoder fails on the data. Off by
            default: on corrupt files GDCM can take seconds to give up, and it rarely succeeds
            where pydicom failed (it does on some header oddities, e.g. pydicom's ``badVR.dcm``).
        limits: caps checked before decoding (`dicom_io.limits.Limits`); None reads the environment.

    Returns:
        (pixels, meta): (H, W) float32 in [0, 1] with 1 = bright (MONOCHROME1 inverted), and
        PHI-free `ImageMeta` (`window` says which rule was applied, `decoder` who decoded).

    Raises:
        ValueError: unknown `window`.
        DicomReadError: header elements unreadable or no transfer syntax.
        UnsupportedTransferSyntax: no installed decoder for the pixel encoding.
        ImageTooLarge: a frame, frame count or compression ratio over `limits` (a PixelDataError).
        PixelDataError: no pixel data, absurd size, size not matching the bytes, bad frame index,
            or corrupt pixel data.
    """
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}; got {window!r}")
    if path is None and isinstance(getattr(ds, "filename", None), str):
        path = ds.filename
    where = str(path) if path is not None else None
    meta = header_meta(ds, path)
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    except Exception as exc:  # noqa: BLE001 - lazily converted header values of untrusted files
        raise DicomReadError(where, f"unreadable header element ({type(exc).__name__})", _REEXPORT) from None
    if not has_pixels:
        raise PixelDataError(where, "no pixel data (not an image, e.g. a report or RT object)",
                             "keep only image files in the input folder")
    check_pixel_budget(ds, where, limits)  # from the header, before any decode
    rows, cols = meta.original_shape
    if rows < 1 or cols < 1 or rows * cols * samples * meta.number_of_frames > MAX_PIXELS:
        raise PixelDataError(where, f"implausible image size {rows}x{cols}x{samples}x{meta.number_of_frames}",
                             _REEXPORT)
    if not 0 <= frame < meta.number_of_frames:
        raise PixelDataError(where, f"frame {frame} requested but the instance has {meta.number_of_frames}",
                             "ask for a frame index below the number of frames")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd values are reported by the typed errors, not as warnings
        arr, decoder = _decode(ds, where, frame, fallback, fallback_on_error)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gray, colour = _grayscale(arr, ds, decoder)
            if colour:
                pixels, rule = normalise_range(gray, window=window)
            else:
                header = ds if decoder == "pydicom" else _voi_header(ds)
                pixels, rule = normalise(gray, header, window=window)
    except DicomIOError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed LUT/window elements of untrusted files
        raise PixelDataError(where, f"intensity transform failed ({type(exc).__name__})",
                             "try window='minmax', or " + _REEXPORT) from None
    meta = dataclasses.replace(meta, window=rule, decoder=decoder, frame_index=frame,
                               original_shape=(int(pixels.shape[0]), int(pixels.shape[1])))
    return pixels, meta


def load_image(path: str | Path, *, window: str = "auto", size: int | None = None,
               frame: int = 0, limits: Limits | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read a DICOM (or PNG/JPEG) file into model-ready pixels.

    Args:
        path: the file; ``.png``/``.jpg``/``.jpeg`` are read with Pillow, anything else as DICOM.
        window: intensity rule (see `get_data`).
        size: if given, resample anti-aliased (SimpleITK) so the long side is `size` and pad the
            short side with zeros (black) to a (size, size) square, aspect kept.
        frame: frame of a multi-frame instance.
        limits: caps checked before decoding; None reads the environment.

    Returns:
        (pixels, meta): (H, W) or (size, size) float32 in [0, 1], and `ImageMeta`
        (`original_shape` is the stored shape, before resizing).

    Raises:
        DicomIOError: a subclass naming the file and the fix (see `read` and `get_data`).
    """
    p = Path(path)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        from dicom_io.images import read_image

        pixels, meta = read_image(p, window=window, limits=limits)
    else:
        pixels, meta = get_data(read(p), window=window, frame=frame, path=p, limits=limits)
    if size is not None:
        from dicom_io.sitk_reader import resize

        pixels = resize(pixels, int(size), keep_aspect=True)
    return pixels, meta
