"""Typed errors of DICOM ingestion.

Every error names the file (by path only, never by patient data) and says what a user can do.
`code` is a stable machine-readable reason written into quarantine records.
"""

from __future__ import annotations

from pathlib import Path


class DicomIOError(Exception):
    """Base class of every error raised by `dicom_io`.

    Args:
        path: the offending file (or folder); shown in the message.
        detail: what went wrong, free of PHI.
        hint: what the user can do about it.
    """

    code = "dicom_io_error"

    def __init__(self, path: str | Path | None, detail: str, hint: str = "") -> None:
        self.path = str(path) if path is not None else None
        self.detail = detail
        self.hint = hint
        where = f"{self.path}: " if self.path else ""
        tail = f" ({hint})" if hint else ""
        super().__init__(f"{where}{detail}{tail}")

    def as_record(self) -> dict[str, str | None]:
        """A JSON-ready quarantine record: stable code, message, file."""
        return {"code": self.code, "error": type(self).__name__, "path": self.path,
                "detail": self.detail, "hint": self.hint}


class DicomReadError(DicomIOError):
    """The file is not readable as DICOM (truncated, corrupt, not DICOM at all)."""

    code = "unreadable"


class UnsupportedTransferSyntax(DicomIOError):
    """Pixel data is encoded with a transfer syntax no installed decoder handles."""

    code = "unsupported_transfer_syntax"


class PixelDataError(DicomIOError):
    """Pixel data is missing, inconsistent with its attributes, or fails to decode."""

    code = "bad_pixel_data"


class NotAChestRadiograph(DicomIOError):
    """The input gate rejected the image: not a chest CR/DX (modality, body part, shape)."""

    code = "not_chest_radiograph"


class DeidentificationError(DicomIOError):
    """De-identification could not be applied safely (bad recipe, missing key, ...)."""

    code = "deid_failed"


class ImageTooLarge(PixelDataError):
    """The header declares more pixels, frames or decoded bytes than `dicom_io.limits.Limits` allows.

    Raised from the header alone, before any decode (decompression bombs, absurd Rows/Columns).

    Args:
        setting: the `Limits` field (and environment variable) that refused the file.
    """

    code = "image_too_large"

    def __init__(self, path: str | Path | None, detail: str, hint: str = "", *, setting: str) -> None:
        super().__init__(path, detail, hint)
        self.setting = setting
