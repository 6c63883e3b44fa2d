"""Fixtures for the DICOM I/O tests: small synthetic chest files (the Orthanc fixtures live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def make_chest_dicom(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a small synthetic chest CR (64x64, 16-bit) with fake patient data.

    Call as ``make_chest_dicom(name, study_uid=..., study_date="20240105", modality="CR",
    folder=None)``; returns the file path. Each file gets new Series/SOP UIDs unless given.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)

    def _make(name: str = "img.dcm", *, study_uid: str | None = None, study_date: str = "20240105",
              modality: str = "CR", folder: Path | None = None, sop_uid: str | None = None,
              series_uid: str | None = None, view: str = "PA") -> Path:
        sop_class = "1.2.840.10008.5.1.4.1.1.1" if modality == "CR" else "1.2.840.10008.5.1.4.1.1.1.1"
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid or generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SOPClassUID = sop_class
        ds.StudyInstanceUID = study_uid or generate_uid()
        ds.SeriesInstanceUID = series_uid or generate_uid()
        ds.PatientName = "Test^Fake"
        ds.PatientID = "FAKE-0001"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.AccessionNumber = "ACC0001"
        ds.StudyID = "1"
        ds.StudyDate = study_date
        ds.StudyTime = "101500"
        ds.ReferringPhysicianName = ""
        ds.Modality = modality
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = view
        ds.SeriesNumber = 1
        ds.InstanceNumber = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = 64
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = rng.integers(0, 4096, (64, 64), dtype=np.uint16).tobytes()
        out = (folder or tmp_path) / name
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out, enforce_file_format=True)
        return out

    return _make
