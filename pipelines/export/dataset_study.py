"""One signed study of the dataset export: its images de-identified, its report redacted and labelled.

Also the pieces a reader may want alone: where a study's source images are (``source_views``),
text redaction of header identifiers (``redact``) and the hash-based split (``split_for``).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.errors import PipelineError
from pipelines.export.dataset_folder import write_if_changed

if TYPE_CHECKING:
    from pydicom import Dataset

    from compliance.deid_recipe import Recipe
    from pipelines.store.exports import ApprovedReport

REDACTED = "[REDACTED]"
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1)
"""Train and val fractions of the hash-based split; the rest is test."""

# Header attributes whose values must never appear in an exported report text.
_IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "InstitutionName",
    "InstitutionAddress",
    "StudyID",
)
_MIN_TOKEN = 3  # shorter name parts ("J", "MD") would redact ordinary words


def source_views(source: str, metadata: dict[str, Any]) -> list[tuple[Path, str]]:
    """(path, view) of a study's source images from its store metadata.

    Understands the two shapes the project writes: intake's (`pipelines.drafting.job.prepare_study`:
    absolute `files` with `views` alongside, `inputs` as a fallback) and the dashboard demo's
    (`images`: `{path, view}` relative to the study's `source` folder).
    """
    files = list(metadata.get("files") or [])
    if files:
        views = list(metadata.get("views") or [])
        return [(Path(p), str(views[i]) if i < len(views) else "") for i, p in enumerate(files)]
    images = metadata.get("images") or []
    if images:
        root = Path(source)
        out = []
        for image in images:
            path = Path(image["path"])
            out.append((path if path.is_absolute() else root / path, str(image.get("view") or "")))
        return out
    return [(Path(p), "") for p in metadata.get("inputs") or []]


class StudySkipped(PipelineError):
    """A signed study that cannot be exported; ``code`` is a PHI-free reason (the export goes on)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def export_study(
    item: ApprovedReport, out: Path, recipe: Recipe, key: bytes, fractions: tuple[float, float]
) -> tuple[dict[str, Any], list[str], bool]:
    """De-identify one study's images into ``out`` and build its ``reports.jsonl`` record.

    Args:
        item: the study's latest signed report version, joined with the study (original UIDs).
        out: the export folder.
        recipe: the de-identification recipe.
        key: the secret UID-remapping key.
        fractions: train and val fractions of the split.

    Returns:
        The record, the files written (relative to ``out``), and whether the report text needed
        redaction.

    Raises:
        StudySkipped: no source file, or none readable / free of burned-in-text doubt.
    """
    import pydicom

    from dicom_io.deid import deidentify, remap_uid
    from medvlm import labeler

    sources = [(p, v) for p, v in source_views(item.source, item.metadata) if p.is_file()]
    if not sources:
        raise StudySkipped("no_source_files")
    new_study = remap_uid(item.study_uid, key)
    identifiers: set[str] = set()
    views: list[dict[str, str]] = []
    files: list[str] = []
    review = unreadable = 0
    for path, view in sorted(sources, key=lambda pv: str(pv[0])):
        try:
            ds = pydicom.dcmread(path)
            identifiers |= _identifiers(ds, item.study_uid)
            result = deidentify(ds, recipe, key, path=path)
        except Exception:  # noqa: BLE001 - untrusted input; the message could quote header values
            unreadable += 1
            continue
        if result.needs_pixel_review:
            review += 1
            continue
        new = result.dataset
        rel = f"{new_study}/{new.SOPInstanceUID}.dcm"
        if rel in files:
            continue  # the same instance twice in the metadata
        buffer = io.BytesIO()
        new.save_as(buffer, enforce_file_format=True)  # pixel bytes as read: no re-encoding
        write_if_changed(out / rel, buffer.getvalue())
        files.append(rel)
        views.append({"path": rel, "view": (view or str(new.get("ViewPosition", "") or "")).upper()})
    if not files:
        raise StudySkipped("needs_pixel_review" if review else "unreadable")
    findings, n1 = redact(item.findings, identifiers)
    impression, n2 = redact(item.impression, identifiers)
    labels = labeler.labels_as_strings(labeler.label_record({"findings": findings, "impression": impression}))
    record = {
        "study_uid": new_study,
        "findings": findings,
        "impression": impression,
        "indication": "",
        "labels": labels,
        "split": split_for(new_study, fractions),
        "views": views,
        "report_version": item.version,
        "deid_recipe_version": recipe.version,
    }
    return record, files, bool(n1 or n2)


def _identifiers(ds: Dataset, study_uid: str) -> set[str]:
    """Identifying strings of a source dataset (and the store's study UID) for text redaction."""
    from pydicom.multival import MultiValue

    found = {study_uid}
    for keyword in _IDENTIFYING_KEYWORDS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        for v in value if isinstance(value, MultiValue | list | tuple) else [value]:
            text = str(v)
            found.add(text)
            found.update(re.split(r"[\^=\s,]+", text))  # name components: family, given, middle, ...
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if keyword in ds:
            found.add(str(ds.get(keyword)))
    return {t.strip() for t in found if len(t.strip()) >= _MIN_TOKEN}


def redact(text: str, identifiers: Iterable[str]) -> tuple[str, int]:
    """Replace whole-word, case-insensitive occurrences of `identifiers` in `text` by `[REDACTED]`.

    Args:
        text: report text.
        identifiers: strings to remove (longest matched first).

    Returns:
        (redacted text, number of replacements).
    """
    words = sorted({i for i in identifiers if i}, key=len, reverse=True)
    if not words or not text:
        return text, 0
    pattern = re.compile(
        r"(?<![\w.])(?:" + "|".join(re.escape(w) for w in words) + r")(?![\w]|\.\d)", re.IGNORECASE
    )
    return pattern.subn(REDACTED, text)


def split_for(study_uid: str, fractions: tuple[float, float] = DEFAULT_SPLIT_FRACTIONS) -> str:
    """train / val / test from a hash of the (de-identified) study UID: stable for a study."""
    digest = hashlib.sha256(f"medvlm-export-split:{study_uid}".encode()).digest()
    x = int.from_bytes(digest[:8], "big") / 2.0**64
    if x < fractions[0]:
        return "train"
    return "val" if x < fractions[0] + fractions[1] else "test"
