"""DICOM input: reading, normalising, studies and views, the chest-radiograph gate.

Only pydicom and numpy are imported here; SimpleITK, Pillow and the decoder plugins are imported
by the functions that use them.
"""

from dicom_io.errors import (
    DicomIOError,
    DicomReadError,
    NotAChestRadiograph,
    PixelDataError,
    UnsupportedTransferSyntax,
)
from dicom_io.gate import check_chest_radiograph, check_dataset
from dicom_io.normalise import WINDOWS, normalise
from dicom_io.reader import get_data, header_meta, load_image, read
from dicom_io.study import (
    AP,
    LATERAL,
    PA,
    UNKNOWN,
    DuplicateInstance,
    ImageMeta,
    MissingUID,
    Series,
    Study,
    group_studies,
)

__all__ = [
    "AP", "LATERAL", "PA", "UNKNOWN", "WINDOWS",
    "DicomIOError", "DicomReadError", "DuplicateInstance", "ImageMeta", "NotAChestRadiograph", "PixelDataError",
    "Series", "Study", "UnsupportedTransferSyntax",
    "MissingUID", "check_chest_radiograph", "check_dataset", "get_data", "group_studies", "header_meta", "load_image",
    "normalise", "read",
]
