"""Signed reports out (DICOM SR, FHIR) and approved pairs as a de-identified dataset."""
