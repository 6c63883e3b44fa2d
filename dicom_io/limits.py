"""Bounded cost per file: caps checked from the header and the first bytes, before any decode.

A hostile or broken file must cost milliseconds and megabytes, not seconds and gigabytes:

* `sniff(path)` reads only the head of a file (`HEAD_BYTES`) and says whether it can be DICOM
  (``DICM`` at byte 128 followed by a File Meta group, or, without a preamble, a first element
  whose tag and VR/length make sense), PNG or JPEG. Anything else, e.g. a zero-filled file of
  any size, is refused at once.
* `parse_guard` stops pydicom's parser on elements that cannot occur in a file (group 0000,
  which is what zero bytes parse as) and on absurd element counts, so a valid header followed
  by megabytes of zeros is refused at the first zero element instead of after minutes.
* `check_pixel_budget(ds)` refuses frames over `Limits.max_frame_pixels`, files over
  `Limits.max_frames`, and pixel data whose size does not match the header: native data shorter
  than Rows x Columns x Samples x BitsAllocated/8 x Frames (or far longer), encapsulated data
  whose declared decoded size is more than `Limits.max_compression_ratio` times its bytes (a
  decompression bomb). Errors name the setting to change.

The defaults suit radiographs (largest detectors are ~4300 x 4300 pixels, one frame); each cap
comes from the environment (`MEDVLM_MAX_FRAME_PIXELS`, `MEDVLM_MAX_FRAMES`,
`MEDVLM_MAX_COMPRESSION_RATIO`) or from a `Limits` passed in.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_io.errors import DicomReadError, ImageTooLarge, PixelDataError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

HEAD_BYTES = 4096
"""How much of a file `sniff` reads: the preamble, the File Meta group and the first element."""
MAX_ELEMENTS = 200_000
"""Elements a header may hold before parsing stops (real radiograph headers hold < 5,000)."""
ENV_FRAME_PIXELS = "MEDVLM_MAX_FRAME_PIXELS"
ENV_FRAMES = "MEDVLM_MAX_FRAMES"
ENV_RATIO = "MEDVLM_MAX_COMPRESSION_RATIO"

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR "
                 b"US UT UV".split())
_NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})
_RLE = "1.2.840.10008.1.2.5"
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
_RLE_MAX_RATIO = 64  # a PackBits replicate run: 2 bytes in, at most 128 bytes out
_REEXPORT = "re-export the image from the PACS or modality"


@dataclass(frozen=True)
class Limits:
    """Caps on what one file may cost; checked from the header before any decode."""

    max_frame_pixels: int = 8192 * 8192
    """Rows x Columns of one frame. 8192^2 is twice the largest radiograph detector on each side."""
    max_frames: int = 16
    """Frames per instance. Radiographs have one; 16 leaves room for small multi-frame test objects."""
    max_compression_ratio: float = 10000.0
    """Declared decoded bytes per stored byte of encapsulated pixel data. Radiographs give 2-50;
    JPEG 2000 of a near-constant test image reaches ~2,000 (pydicom's JPEG2000.dcm), so the bound
    is loose and the pixel cap does most of the work. RLE is held to its format limit (64:1)."""

    def __post_init__(self) -> None:
        for name in ("max_frame_pixels", "max_frames", "max_compression_ratio"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Defaults, overridden by `MEDVLM_MAX_FRAME_PIXELS`, `MEDVLM_MAX_FRAMES`, `MEDVLM_MAX_COMPRESSION_RATIO`.

        Raises:
            ValueError: a variable is set but not a positive number (the message names it).
        """
        env = os.environ if environ is None else environ
        kwargs: dict[str, float | int] = {}
        for var, field_name, kind in ((ENV_FRAME_PIXELS, "max_frame_pixels", int), (ENV_FRAMES, "max_frames", int),
                                      (ENV_RATIO, "max_compression_ratio", float)):
            raw = env.get(var, "").strip()
            if raw:
                try:
                    kwargs[field_name] = kind(raw)
                except ValueError:
                    raise ValueError(f"${var} must be a number, got {raw!r}") from None
        return cls(**kwargs)


def sniff(path: str | Path) -> str:
    """Classify a file from its first `HEAD_BYTES` bytes: ``dicom``, ``png`` or ``jpeg``.

    Raises:
        DicomReadError: the head is none of these (e.g. zeros, text); costs one small read.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise DicomReadError(p, f"cannot read the file ({type(exc).__name__})", "check the path and permissions") \
            from None
    if head.startswith(_PNG):
        return "png"
    if head.startswith(_JPEG):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        if head[132:134] != b"\x02\x00":
            raise DicomReadError(p, "DICM prefix without a File Meta group", _REEXPORT)
        _check_after_meta(p, head)
        return "dicom"
    if _plausible_raw_dataset(head, size):
        return "dicom"
    raise DicomReadError(p, "not a DICOM, PNG or JPEG file (no DICM prefix and no DICOM element at the start)",
                         "remove it from the folder, or convert it to DICOM")


def _plausible_raw_dataset(head: bytes, size: int) -> bool:
    """A DICOM data set without preamble: the first tag is an even low group, then a VR or a sane length."""
    if len(head) < 8:
        return False
    for order in ("<", ">"):
        group, element = struct.unpack(order + "HH", head[:4])
        if group % 2 or not 0x0002 <= group <= 0x0028 or element > 0x9FFF:
            continue
        if head[4:6] in _VRS:
            return True
        (length,) = struct.unpack(order + "I", head[4:8])
        if order == "<" and (length == 0xFFFFFFFF or length <= size):
            return True  # implicit VR is little endian only
    return False


def _check_after_meta(p: Path, head: bytes) -> None:
    """The element after the File Meta group must not be group 0000 (zeros parse as that, slowly)."""
    if head[132:136] != b"\x02\x00\x00\x00" or head[136:138] != b"UL" or len(head) < 144:
        return  # no group length: pydicom finds the end itself; the parse guard covers the rest
    (meta_len,) = struct.unpack("<I", head[140:144])
    start = 144 + meta_len
    if start + 4 <= len(head) and head[start:start + 2] == b"\x00\x00":
        raise DicomReadError(p, "no DICOM element after the File Meta group (zero bytes)", _REEXPORT)


class parse_guard:  # noqa: N801 - used like a function by pydicom's `stop_when`
    """`stop_when` callback for pydicom's parser: refuses group 0000 elements and absurd element counts.

    Args:
        path: the file, for the message.
        stop_before_pixels: return True (stop) at the pixel data element.
    """

    def __init__(self, path: str | Path, stop_before_pixels: bool = False) -> None:
        self.path = Path(path)
        self.stop_before_pixels = stop_before_pixels
        self.count = 0

    def __call__(self, tag: int, vr: str | None, length: int) -> bool:
        self.count += 1
        if tag >> 16 == 0:
            raise DicomReadError(self.path, "a group 0000 element inside the data set (zero or shifted bytes)",
                                 _REEXPORT)
        if self.count > MAX_ELEMENTS:
            raise DicomReadError(self.path, f"more than {MAX_ELEMENTS} header elements", _REEXPORT)
        return self.stop_before_pixels and tag in (0x7FE00010, 0x7FE00008, 0x7FE00009)


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        return default
    return int(value)


def check_pixel_budget(ds: Dataset, path: str | Path | None = None, limits: Limits | None = None) -> None:
    """Refuse, from the header alone, pixel data that is too large or does not match its bytes.

    Args:
        ds: a dataset read with its pixel data (or without: then only the caps are checked).
        path: the file, for messages.
        limits: the caps; None reads them from the environment (`Limits.from_env`).

    Raises:
        ImageTooLarge: a frame over `max_frame_pixels`, more than `max_frames` frames, or an
            encapsulated ratio over `max_compression_ratio`; the message names the setting.
        PixelDataError: unreadable size attributes, or native pixel data shorter than declared
            (truncated) or more than twice as long.
    """
    limits = limits or Limits.from_env()
    where = str(path) if path is not None else None
    try:
        rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
        samples = _int(ds, "SamplesPerPixel", 1)
        bits = _int(ds, "BitsAllocated", 0)
    except Exception as exc:  # noqa: BLE001 - lazily converted values of untrusted files
        raise PixelDataError(where, f"unreadable image size attributes ({type(exc).__name__})", _REEXPORT) from None
    try:
        frames = _int(ds, "NumberOfFrames", 1)
    except Exception:  # noqa: BLE001 - pydicom cannot decode such a file; SimpleITK reads frame 0 only
        frames = 1
    if rows < 1 or cols < 1 or samples not in (1, 3, 4) or frames < 1 or bits not in (1, 8, 16, 32, 64):
        raise PixelDataError(where, f"implausible image size {rows}x{cols} ({samples} samples, {bits} bits "
                             f"allocated, {frames} frames)", _REEXPORT)
    if rows * cols > limits.max_frame_pixels:
        raise ImageTooLarge(where, f"frame of {rows}x{cols} = {rows * cols:,} pixels exceeds max_frame_pixels "
                            f"{limits.max_frame_pixels:,}", f"raise ${ENV_FRAME_PIXELS} if such images are expected",
                            setting="max_frame_pixels")
    if frames > limits.max_frames:
        raise ImageTooLarge(where, f"{frames} frames exceed max_frames {limits.max_frames}",
                            f"raise ${ENV_FRAMES} if such images are expected", setting="max_frames")
    try:
        elem = ds.get_item("PixelData") if "PixelData" in ds else None
        if elem is None or elem.value is None:
            return
        stored = len(elem.value)
        meta = getattr(ds, "file_meta", None)
        tsyntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        undefined = getattr(elem, "is_undefined_length", None)  # DataElement; a RawDataElement has only length
        if undefined is None:
            undefined = getattr(elem, "length", 0) == 0xFFFFFFFF
    except Exception as exc:  # noqa: BLE001 - a corrupt VR or length in an untrusted file
        raise PixelDataError(where, f"unreadable pixel data element ({type(exc).__name__})", _REEXPORT) from None
    declared = (rows * cols * samples * frames * bits + 7) // 8
    encapsulated = bool(undefined) if tsyntax == "" else tsyntax not in _NATIVE
    if not encapsulated:
        if stored < declared:
            raise PixelDataError(where, f"pixel data holds {stored:,} bytes, the header declares {declared:,}",
                                 "the file is truncated or Rows/Columns/BitsAllocated are wrong; " + _REEXPORT)
        if stored > 2 * declared + 65536:
            raise PixelDataError(where, f"pixel data holds {stored:,} bytes, far more than the {declared:,} declared",
                                 _REEXPORT)
    elif tsyntax == _RLE and declared > _RLE_MAX_RATIO * stored + 64 * frames:
        raise ImageTooLarge(where, f"{stored:,} bytes of RLE cannot hold the {declared:,} decoded bytes declared "
                            f"(RLE compresses at most {_RLE_MAX_RATIO}:1)", "a decompression bomb or wrong "
                            "Rows/Columns; " + _REEXPORT, setting="max_compression_ratio")
    elif declared > limits.max_compression_ratio * max(stored, 1):
        raise ImageTooLarge(where, f"{stored:,} compressed bytes declare {declared:,} decoded bytes, a ratio over "
                            f"max_compression_ratio {limits.max_compression_ratio:g}",
                            f"a decompression bomb or wrong Rows/Columns; raise ${ENV_RATIO} if genuine",
                            setting="max_compression_ratio")
    if encapsulated and undefined:  # fragments only exist in undefined-length pixel data
        _check_codestream_sizes(elem.value, rows, cols, where)


def _check_codestream_sizes(data: bytes, rows: int, cols: int, where: str | None) -> None:
    """Each JPEG / JPEG-LS / JPEG 2000 frame must not declare more rows or columns than the header.

    Decoders size their work by the codestream's own header (SOFn, SIZ), not by Rows/Columns: a
    small frame declaring 60000 x 60000 inside a 64 x 64 DICOM is a bomb the caps above miss.
    """
    from pydicom.encaps import generate_fragments

    try:
        for fragment in generate_fragments(data):
            size = _codestream_size(fragment[:65536])
            if size is not None and (size[0] > rows or size[1] > cols):
                raise PixelDataError(where, f"a compressed frame declares {size[0]}x{size[1]} pixels, the header "
                                     f"{rows}x{cols}", "the pixel data does not match Rows/Columns; " + _REEXPORT)
    except PixelDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - broken item tags/lengths; the decoder reports the details
        raise PixelDataError(where, f"encapsulated pixel data does not parse ({type(exc).__name__})",
                             _REEXPORT) from None


def _codestream_size(head: bytes) -> tuple[int, int] | None:
    """(rows, columns) from a JPEG SOFn / JPEG-LS SOF55 or a JPEG 2000 SIZ segment; None if not found."""
    if head.startswith(b"\xff\x4f\xff\x51") and len(head) >= 24:
        xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", head[8:24])
        return max(ysiz - yosiz, 0), max(xsiz - xosiz, 0)
    if not head.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 9 <= len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in _SOF:
            height, width = struct.unpack(">HH", head[pos + 5:pos + 9])
            return height, width
        if marker in (0xD9, 0xDA):
            return None
        pos += 2 + int.from_bytes(head[pos + 2:pos + 4], "big")
    return None
