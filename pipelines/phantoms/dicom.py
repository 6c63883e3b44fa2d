"""Writing phantom views as real DICOM: CR or DX, MONOCHROME1/2, and six transfer syntaxes.

Explicit and Implicit VR Little Endian and Deflated Explicit VR Little Endian are written by
pydicom itself; RLE Lossless (pydicom's native encoder), JPEG-LS Lossless (`pyjpegls`) and
JPEG 2000 Lossless (`pylibjpeg-openjpeg`) go through `Dataset.compress(...,
generate_instance_uid=False)` so that the SOP Instance UID stays deterministic. A syntax whose
encoder plugin is missing is left out by `available_transfer_syntaxes`, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.phantoms.spec import PhantomError

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"

DEFAULT_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless (pydicom native encoder)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless (pyjpegls)
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless (pylibjpeg-openjpeg)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
)


def available_transfer_syntaxes(wanted: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES) -> tuple[str, ...]:
    """The subset of `wanted` this environment can write (compressed ones need an encoder plugin).

    Args:
        wanted: transfer syntax UIDs, in the order studies cycle over them.

    Returns:
        Those with an available encoder (uncompressed ones always), order kept.
    """
    from pydicom.pixels.encoders.base import get_encoder
    from pydicom.uid import UID

    out = []
    for ts in wanted:
        uid = UID(ts)
        if not uid.is_compressed:
            out.append(ts)
            continue
        try:
            if get_encoder(uid).is_available:
                out.append(ts)
        except (NotImplementedError, ValueError):
            continue
    return tuple(out)


def to_stored(image: np.ndarray, bits_stored: int, photometric: str) -> np.ndarray:
    """Display image in [0, 1] (bright = dense) -> unsigned stored values.

    MONOCHROME2 stores bright as high values; MONOCHROME1 stores the inverse (max - value), so both
    display the same image.

    Args:
        image: float array (H, W) in [0, 1].
        bits_stored: 8..16.
        photometric: "MONOCHROME1" or "MONOCHROME2".

    Returns:
        uint16 array (H, W) in [0, 2**bits_stored - 1].

    Raises:
        PhantomError: `bits_stored` or `photometric` out of range.
    """
    if not 8 <= bits_stored <= 16:
        raise PhantomError(f"bits_stored must be in 8..16, got {bits_stored}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise PhantomError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    top = (1 << bits_stored) - 1
    stored = np.rint(np.clip(image, 0.0, 1.0) * top).astype(np.uint16)
    return (top - stored).astype(np.uint16) if photometric == "MONOCHROME1" else stored


@dataclass(frozen=True)
class SeriesInfo:
    """Where one view of a study goes: its series and instance identity and relative path."""

    view: str  # PA, AP or LL
    series_number: int
    series_uid: str
    sop_uid: str
    path: Path


def phantom_uid(*parts: object) -> str:
    """A UID derived from `parts` (e.g. seed, study index, "series", number): same parts, same UID."""
    from pydicom.uid import generate_uid

    # Default pydicom root + SHA-512 of the parts: deterministic (prefix=None would be random).
    return str(generate_uid(entropy_srcs=["medvlm-phantom", *map(str, parts)]))


def write_image(
    path: Path,
    image: np.ndarray,
    *,
    common: dict[str, Any],
    series: SeriesInfo,
    modality: str,
    ts: str,
    photometric: str,
    bits_stored: int,
    rescale: tuple[float, float] | None,
    pixel_spacing_mm: float,
) -> None:
    """Write one view as a CR or DX image in transfer syntax `ts` (compressed ones via `compress`).

    Args:
        path: file to write (parents are created).
        image: float (H, W) in [0, 1], display convention.
        common: patient / study attributes shared by the study's views.
        series: this view's series and instance identity.
        modality: "CR" (CR Image Storage) or "DX" (Digital X-Ray For Presentation).
        ts: transfer syntax UID.
        photometric: "MONOCHROME1" (stored inverted) or "MONOCHROME2".
        bits_stored: 8..16.
        rescale: (slope, intercept) to write, or None (DX still writes the identity).
        pixel_spacing_mm: PixelSpacing and ImagerPixelSpacing.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    sop_class = CR_IMAGE_STORAGE if modality == "CR" else DX_PRESENTATION_STORAGE
    stored = to_stored(image, bits_stored, photometric)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = series.sop_uid
    ts_uid = UID(ts)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if ts_uid.is_compressed else ts_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = series.sop_uid
    for key, value in common.items():
        setattr(ds, key, value)
    ds.Modality = modality
    ds.SeriesInstanceUID = series.series_uid
    ds.SeriesNumber = series.series_number
    ds.SeriesDescription = "CHEST LATERAL" if series.view == "LL" else f"CHEST {series.view}"
    ds.SeriesDate = ds.ContentDate = ds.StudyDate
    ds.SeriesTime = ds.ContentTime = ds.StudyTime
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = series.view
    ds.PatientOrientation = (
        ["A", "F"] if series.view == "LL" else (["L", "F"] if series.view == "PA" else ["R", "F"])
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImageComments = "Synthetic phantom, not patient data."
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [f"{pixel_spacing_mm:.4f}", f"{pixel_spacing_mm:.4f}"]
    ds.ImagerPixelSpacing = ds.PixelSpacing
    ds.BurnedInAnnotation = "NO"
    slope, intercept = rescale if rescale is not None else (1.0, 0.0)
    if rescale is not None or modality == "DX":
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleType = "US"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        # +1: lower values = less beam (denser). MONOCHROME2 stores dense as HIGH, hence -1.
        ds.PixelIntensityRelationshipSign = -1 if photometric == "MONOCHROME2" else 1
        ds.DetectorType = "SCINTILLATOR"
    lo, hi = np.percentile(stored, [0.5, 99.5])
    lo, hi = slope * float(lo) + intercept, slope * float(hi) + intercept
    ds.WindowCenter = f"{(lo + hi) / 2:.1f}"
    ds.WindowWidth = f"{max(hi - lo, 1.0):.1f}"
    ds.VOILUTFunction = "LINEAR"
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    if ts_uid.is_compressed:
        ds.compress(ts_uid, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
