"""Rebuild pixel data for de-identification: keep the image, drop every byte that is not image.

Pixel data can carry text that is not pixels: JPEG comment (COM) and application (APPn)
segments (EXIF, thumbnails, vendor notes), JPEG 2000 comment (COM) segments, bytes after a
frame's end-of-image marker, native bytes past Rows x Columns x Frames, and unused high bits
(retired overlays live there). `rebuild_pixel_data(ds)` rewrites the dataset's pixel data in
place, by transfer syntax:

* native (implicit/explicit VR little/big endian, deflated): exactly the declared number of
  bytes, unused high bits cleared (signed values sign-extended); decoded values are unchanged;
* JPEG baseline/extended/lossless and JPEG-LS: each frame rebuilt from its markers without
  COM/APPn segments (an Adobe APP14 is rewritten to its 12 standard bytes, since it says how
  colour was transformed), nothing before SOI or after EOI; no decode, no re-encode;
* JPEG 2000 / HTJ2K codestreams: COM segments removed from the main and tile-part headers
  (tile-part lengths adjusted), nothing after EOC;
* RLE: decoded and stored as native Explicit VR Little Endian (lossless, and RLE segments can
  hide bytes past their runs);
* anything else: left as is and reported, so the caller flags the file for a human.

It returns the transfer syntax of the rebuilt data and whether the data could be rebuilt.
Frame bytes that do not parse as their codec raise `ValueError` (the caller refuses the file).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})
JPEG = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                  "1.2.840.10008.1.2.4.70"})
JPEG_LS = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
JPEG_2000 = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                       "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"})
RLE = "1.2.840.10008.1.2.5"

_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length


def rebuild_pixel_data(ds: Dataset, tsyntax: str) -> tuple[str, bool]:
    """Rebuild `ds.PixelData` in place (see the module docstring).

    Args:
        ds: a dataset whose caps were checked (`dicom_io.limits.check_pixel_budget`).
        tsyntax: its transfer syntax UID.

    Returns:
        (transfer syntax of the rebuilt data, True if rebuilt; False: left as is, needs a human).

    Raises:
        ValueError: a frame does not parse as its codec, or native data is shorter than declared.
    """
    if "PixelData" not in ds:
        return tsyntax, True
    if tsyntax in NATIVE:
        _rebuild_native(ds, big_endian=tsyntax == "1.2.840.10008.1.2.2")
        return tsyntax, True
    if tsyntax in JPEG or tsyntax in JPEG_LS or tsyntax in JPEG_2000:
        from pydicom.encaps import encapsulate, generate_frames

        clean = clean_j2k if tsyntax in JPEG_2000 else (lambda f: clean_jpeg(f, jpeg_ls=tsyntax in JPEG_LS))
        frames = [clean(frame) for frame in generate_frames(ds.PixelData, number_of_frames=_frames(ds))]
        ds.PixelData = encapsulate(frames, has_bot=len(frames) > 1)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        return tsyntax, True
    if tsyntax == RLE:
        _rle_to_native(ds)
        return str(ExplicitVRLittleEndian), True
    return tsyntax, False


def _frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _rebuild_native(ds: Dataset, *, big_endian: bool) -> None:
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.BitsAllocated)
    expected = (rows * cols * samples * _frames(ds) * bits + 7) // 8
    data = bytes(ds.PixelData)
    if len(data) < expected:
        raise ValueError(f"native pixel data holds {len(data)} bytes, {expected} declared")
    data = data[:expected]
    stored = int(ds.get("BitsStored", bits) or bits)
    if bits in (8, 16, 32) and 0 < stored < bits:
        dtype = np.dtype(f"{'>' if big_endian else '<'}u{bits // 8}")
        arr = np.frombuffer(data, dtype=dtype) & np.array((1 << stored) - 1, dtype=dtype)
        if int(ds.get("PixelRepresentation", 0) or 0) == 1:  # sign-extend from BitsStored
            sign = np.array(1 << (stored - 1), dtype=dtype)
            arr = np.where(arr & sign, arr | np.array(((1 << bits) - 1) ^ ((1 << stored) - 1), dtype=dtype), arr)
        data = arr.astype(dtype, copy=False).tobytes()
    ds.PixelData = data + (b"\x00" if len(data) % 2 else b"")


def _rle_to_native(ds: Dataset) -> None:
    from pydicom.pixels import pixel_array

    bits = int(ds.BitsAllocated)
    if bits == 1:
        raise ValueError("1-bit RLE data cannot be rebuilt")
    arr = pixel_array(ds, raw=True)  # (frames?, rows, cols, samples?), values as stored
    ds.PixelData = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    ds["PixelData"].is_undefined_length = False
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        ds.PlanarConfiguration = 0  # pixel_array returns colour-by-pixel


def clean_jpeg(frame: bytes, *, jpeg_ls: bool = False) -> bytes:
    """One JPEG / JPEG-LS frame without COM and APPn segments and without bytes outside SOI..EOI.

    Raises:
        ValueError: no SOI, a marker where one is expected is missing, or no EOI.
    """
    start = frame.find(_SOI)
    if start < 0:
        raise ValueError("no JPEG start-of-image marker")
    out = bytearray(_SOI)
    pos, end = start + 2, len(frame)
    while pos + 1 < end:
        if frame[pos] != 0xFF:
            raise ValueError("JPEG marker expected")
        marker = frame[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            out += _EOI
            return bytes(out)
        if marker in _STANDALONE:
            out += frame[pos:pos + 2]
            pos += 2
            continue
        if pos + 4 > end:
            raise ValueError("JPEG segment cut short")
        seg_end = pos + 2 + int.from_bytes(frame[pos + 2:pos + 4], "big")
        if seg_end > end:
            raise ValueError("JPEG segment longer than the frame")
        if marker == 0xEE and frame[pos + 4:pos + 9] == b"Adobe":
            transform = frame[pos + 15] if seg_end - pos >= 16 and frame[pos + 15] <= 2 else 0
            out += b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00" + bytes([transform])
        elif not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            out += frame[pos:seg_end]
        pos = seg_end
        if marker == 0xDA:  # entropy-coded data follows the scan header, up to the next real marker
            scan_end = _scan_end(frame, pos, jpeg_ls)
            out += frame[pos:scan_end]
            pos = scan_end
    raise ValueError("no JPEG end-of-image marker")


def _scan_end(frame: bytes, pos: int, jpeg_ls: bool) -> int:
    while True:
        k = frame.find(b"\xff", pos)
        if k < 0 or k + 1 >= len(frame):
            raise ValueError("JPEG scan without an end")
        nxt = frame[k + 1]
        if (jpeg_ls and nxt < 0x80) or nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
            pos = k + 2  # stuffed byte or restart marker: still scan data
        elif nxt == 0xFF:
            pos = k + 1
        else:
            return k


def clean_j2k(frame: bytes) -> bytes:
    """One JPEG 2000 codestream without COM segments (main and tile-part headers) or trailing bytes.

    Raises:
        ValueError: not a raw codestream (SOC), or a segment or tile-part that does not parse.
    """
    if not frame.startswith(b"\xff\x4f"):
        raise ValueError("not a JPEG 2000 codestream (no SOC marker)")
    out = bytearray(b"\xff\x4f")
    pos = _copy_header(frame, 2, out, stop=0xFF90)
    while frame[pos:pos + 2] == b"\xff\x90":  # tile-parts
        if pos + 12 > len(frame):
            raise ValueError("JPEG 2000 tile-part header cut short")
        (psot,) = struct.unpack(">I", frame[pos + 6:pos + 10])
        part_end = len(frame) - 2 if psot == 0 else pos + psot
        if part_end > len(frame):
            raise ValueError("JPEG 2000 tile-part longer than the frame")
        header = bytearray()
        data_start = _copy_header(frame, pos + 12, header, stop=0xFF93, limit=part_end)
        body = frame[data_start:part_end]
        new_psot = 0 if psot == 0 else 12 + len(header) + len(body)
        out += frame[pos:pos + 6] + struct.pack(">I", new_psot) + frame[pos + 10:pos + 12] + header + body
        pos = part_end
    if frame[pos:pos + 2] != b"\xff\xd9":
        raise ValueError("JPEG 2000 codestream without EOC")
    return bytes(out + b"\xff\xd9")


def _copy_header(frame: bytes, pos: int, out: bytearray, *, stop: int, limit: int | None = None) -> int:
    """Copy marker segments into `out` (COM dropped) until marker `stop`; returns the position after it
    for SOD (copied), or of it for SOT (not copied)."""
    limit = len(frame) if limit is None else limit
    while pos + 4 <= limit:
        (marker,) = struct.unpack(">H", frame[pos:pos + 2])
        if marker == stop:
            if stop == 0xFF93:
                out += frame[pos:pos + 2]
                return pos + 2
            return pos
        if marker >> 8 != 0xFF:
            raise ValueError("JPEG 2000 marker expected")
        seg_end = pos + 2 + int.from_bytes(frame[pos + 2:pos + 4], "big")
        if seg_end > limit:
            raise ValueError("JPEG 2000 segment longer than its header")
        if marker != 0xFF64:  # COM
            out += frame[pos:seg_end]
        pos = seg_end
    raise ValueError("JPEG 2000 header without its end marker")

