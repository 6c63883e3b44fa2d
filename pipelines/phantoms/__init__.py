"""Synthetic phantom chest studies: rendering, DICOM writing, matching reports.

Reading order: `spec` (what a study shows) -> `body`, `canvas` (the patient and the drawing
primitives) -> `frontal`, `lateral` (the two views, anatomy then findings) -> `reports` (text
from `phrases`, a data table) -> `dicom` (CR/DX files) -> `generate` (studies and the set).
"""

from __future__ import annotations

from pipelines.phantoms.dicom import DEFAULT_TRANSFER_SYNTAXES, available_transfer_syntaxes, to_stored
from pipelines.phantoms.frontal import render_frontal
from pipelines.phantoms.generate import (
    PhantomConfig,
    PhantomStudy,
    PhantomSummary,
    generate_phantoms,
    make_study,
)
from pipelines.phantoms.lateral import render_lateral
from pipelines.phantoms.reports import build_report
from pipelines.phantoms.spec import (
    CHEXPERT_OBSERVATIONS,
    DEVICES,
    KINDS,
    LOBES,
    ZONES,
    Finding,
    FindingsSpec,
    PhantomError,
    sample_finding,
    sample_spec,
)

__all__ = [
    "CHEXPERT_OBSERVATIONS",
    "DEFAULT_TRANSFER_SYNTAXES",
    "DEVICES",
    "KINDS",
    "LOBES",
    "ZONES",
    "Finding",
    "FindingsSpec",
    "PhantomConfig",
    "PhantomError",
    "PhantomStudy",
    "PhantomSummary",
    "available_transfer_syntaxes",
    "build_report",
    "generate_phantoms",
    "make_study",
    "render_frontal",
    "render_lateral",
    "sample_finding",
    "sample_spec",
    "to_stored",
]
