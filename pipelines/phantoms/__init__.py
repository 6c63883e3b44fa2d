"""Synthetic phantom chest studies: rendering, DICOM writing, matching reports."""
