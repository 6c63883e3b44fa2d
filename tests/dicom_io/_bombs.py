"""Builders of hostile files for the DICOM I/O tests: decompression bombs and zero-filled files."""

from __future__ import annotations

import io
import struct
import subprocess
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless, generate_uid


def _chest_header(rows: int, cols: int, tsyntax: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = tsyntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def jpeg_bomb(path: Path, rows: int = 16383, cols: int = 16384) -> Path:
    """A ~127 KB JPEG-in-DICOM whose header and SOF declare 16384 x 16383 (the issue's bomb)."""
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (420, 420), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG", quality=90)
    jpeg = bytearray(buf.getvalue())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", rows, cols)  # height, width
    ds = _chest_header(rows, cols, JPEGBaseline8Bit)
    ds.PixelData = encapsulate([bytes(jpeg)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def rle_bomb(path: Path, rows: int = 65535, cols: int = 65535) -> Path:
    """An ~18 KB RLE DICOM declaring 65535 x 65535 (the issue's bomb): replicate runs, valid header."""
    segment = b"\x81\x00" * 9000  # each pair says "129 - 1 ... 128 zero bytes"
    frame = struct.pack("<16I", 1, 64, *([0] * 14)) + segment
    ds = _chest_header(rows, cols, RLELossless)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def sparse_zeros(path: Path, size: int, head: bytes = b"") -> Path:
    """`head`, then zeros up to `size` bytes, as a sparse file (`truncate`): no disk used."""
    path.write_bytes(head)
    subprocess.run(["truncate", "-s", str(size), str(path)], check=True)
    return path
