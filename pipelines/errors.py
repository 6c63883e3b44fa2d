"""The one base of every error that `pipelines` raises on purpose.

The CLI prints a `PipelineError` (and `medvlm` / `dicom_io` typed errors) as one actionable line;
anything else is a bug and keeps its traceback. Subclasses keep `ValueError` / `RuntimeError` as a
second base where callers already catch those.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of the typed errors raised by `pipelines` (bad input, refused action, unusable store)."""
