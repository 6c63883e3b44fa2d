"""`medvlm export-dataset`: signed reports + their de-identified images as a training folder.

The review store holds what radiologists approved. This job turns every study whose report has
a signed version into one training example, in the phantom layout that
`pipelines.training.datasets.load_records` reads::

    OUT/reports.jsonl                         one record per study (sorted by the NEW study UID)
    OUT/<new study_uid>/<new sop_uid>.dcm     de-identified images (pixel data byte-identical)
    OUT/manifest.json                         recipe name/version/sha256, counts, file list

* Images go through `dicom_io.deid.deidentify` with the versioned recipe and the secret key, so
  every UID is a keyed HMAC (`2.25.<int>`) and the same key gives the same output every run.
  The study's record UID is the keyed remap of the store's study UID (equal to the images'
  new StudyInstanceUID when the store keys studies by their StudyInstanceUID, as intake does).
* The report text is the latest SIGNED version's findings and impression (a later unsigned
  edit is not approved, so it is not used). Identifiers found in the source headers (patient
  name parts, patient ID, accession number, referring/performing physician, institution) are
  replaced by ``[REDACTED]`` in the text, in case a report quotes them.
* Labels come from `medvlm.labeler`; the split is a hash of the new study UID (stable under
  re-export and independent of which other studies are exported).
* Nothing identifying is written: no original UID, name, date or source path, no sign-off time
  and no indication text (free text from the order). Images whose pixels may carry burned-in
  text (`DeidResult.needs_pixel_review`) are left out, never silently passed.
* Re-running with the same store, key and recipe gives byte-identical output; files an earlier
  export wrote that are no longer part of the set are removed (only those listed in its manifest).
* One audit event (`dataset.export`) is appended per export in a store transaction; its details
  are counts, the recipe version and the dataset hash only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from compliance.clock import as_utc
from pipelines.errors import PipelineError

REPORTS_FILE = "reports.jsonl"
MANIFEST_FILE = "manifest.json"
FORMAT = "medvlm-export/1"
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


class DatasetExportError(PipelineError, RuntimeError):
    """The export cannot be done (the output folder holds something else, bad fractions)."""


@dataclass(frozen=True)
class ExportSummary:
    """What one `export_approved_pairs` did.

    Args:
        out: the output folder.
        studies: studies exported (records in reports.jsonl).
        images: DICOM files written.
        splits: studies per split.
        skipped: one record per signed study left out: `study` (the store's audit pseudonym,
            never the UID) and `code` (`no_source_files`, `unreadable`, `needs_pixel_review`).
        redacted_reports: exported reports in which header identifiers were redacted.
        recipe_name: de-identification recipe name.
        recipe_version: its version (also in every record and in manifest.json).
        dataset_sha256: SHA-256 of manifest.json (names this exact dataset, e.g. in the audit log).
    """

    out: Path
    studies: int
    images: int
    splits: dict[str, int]
    skipped: tuple[dict[str, str], ...]
    redacted_reports: int
    recipe_name: str
    recipe_version: str
    dataset_sha256: str
    removed_stale: int = 0
    """Files of an earlier export removed because they are no longer in the set."""
    warnings: tuple[str, ...] = field(default_factory=tuple)
    """PHI-free notes for the operator."""

    def as_dict(self) -> dict[str, Any]:
        """Counts, recipe and hash, for the CLI's summary (no pseudonyms)."""
        return {
            "out": str(self.out),
            "studies": self.studies,
            "images": self.images,
            "splits": dict(self.splits),
            "skipped": dict(Counter(s["code"] for s in self.skipped)),
            "redacted_reports": self.redacted_reports,
            "recipe_version": self.recipe_version,
            "dataset_sha256": self.dataset_sha256,
        }


@dataclass(frozen=True)
class _Approved:
    """A signed version joined with its study (store side: holds the original UID)."""

    study_uid: str
    source: str
    metadata: dict[str, Any]
    version: int
    findings: str
    impression: str


def export_approved_pairs(
    store: Any,
    out_dir: str | Path,
    *,
    key_file: str | Path | None = None,
    recipe: str | Path | None = None,
    since: datetime | None = None,
    split_fractions: tuple[float, float] = DEFAULT_SPLIT_FRACTIONS,
    actor: str = "medvlm-export",
) -> ExportSummary:
    """Export every study with a signed report version as a de-identified training folder.

    Args:
        store: the open review store (`pipelines.store.open_store`).
        out_dir: output folder (created); it must be empty or hold an earlier export.
        key_file: secret UID-remapping key file; None reads `$MEDVLM_DEID_KEY` (`dicom_io.deid.load_key`).
        recipe: de-identification recipe YAML; None uses the shipped PS3.15 basic profile.
        since: only versions signed at or after this time (naive datetimes are taken as UTC).
        split_fractions: train and val fractions of the hash-based split (rest: test).
        actor: recorded in the audit event.

    Returns:
        The summary (see the module docstring for the files written).

    Raises:
        DeidentificationError: no usable key (checked before anything is read or written).
        compliance.deid_recipe.RecipeError: the recipe file is missing or invalid.
        DatasetExportError: `out_dir` is a non-empty folder without an earlier export's manifest, or
            bad `split_fractions`.
    """
    from compliance.deid_recipe import load_recipe
    from dicom_io.deid import load_key

    if len(split_fractions) != 2 or min(split_fractions) < 0 or sum(split_fractions) > 1:
        raise DatasetExportError(f"split_fractions must be two fractions >= 0 summing to <= 1, got {split_fractions}")
    parsed_recipe = load_recipe(recipe)
    key = load_key(Path(key_file) if key_file is not None else None)
    out = Path(out_dir)
    previous = _previous_files(out)
    out.mkdir(parents=True, exist_ok=True)

    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    written: list[str] = []
    redacted = 0
    for item in _approved(store, since):
        try:
            record, files, was_redacted = _export_study(item, out, parsed_recipe, key, split_fractions)
        except _Skip as skip:
            skipped.append({"study": store.pseudonym(item.study_uid), "code": skip.code})
            continue
        records.append(record)
        written += files
        redacted += was_redacted
    records.sort(key=lambda r: r["study_uid"])
    skipped.sort(key=lambda s: (s["code"], s["study"]))

    reports = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode("utf-8")
    _write_if_changed(out / REPORTS_FILE, reports)
    splits = dict(sorted(Counter(r["split"] for r in records).items()))
    manifest = {
        "format": FORMAT,
        "recipe_name": parsed_recipe.name,
        "recipe_version": parsed_recipe.version,
        "recipe_sha256": parsed_recipe.sha256,
        "deidentification_method": parsed_recipe.method,
        "studies": len(records),
        "images": len(written),
        "splits": splits,
        "split_fractions": list(split_fractions),
        "skipped": dict(sorted(Counter(s["code"] for s in skipped).items())),
        "since": as_utc(since).isoformat() if since is not None else None,
        "reports_sha256": hashlib.sha256(reports).hexdigest(),
        "files": sorted(written),
    }
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    _write_if_changed(out / MANIFEST_FILE, manifest_bytes)
    removed = _remove_stale(out, previous - set(written))
    dataset_hash = hashlib.sha256(manifest_bytes).hexdigest()

    from compliance.audit import append_event

    with store.transaction() as session:
        append_event(
            session,
            actor=actor,
            action="dataset.export",
            object_type="dataset",
            object_id=dataset_hash,
            details={
                "studies": len(records),
                "images": len(written),
                "skipped": len(skipped),
                "redacted_reports": redacted,
                "recipe_version": parsed_recipe.version,
                "splits": splits,
            },
        )
    return ExportSummary(
        out=out,
        studies=len(records),
        images=len(written),
        splits=splits,
        skipped=tuple(skipped),
        redacted_reports=redacted,
        recipe_name=parsed_recipe.name,
        recipe_version=parsed_recipe.version,
        dataset_sha256=dataset_hash,
        removed_stale=removed,
    )


# ---- store side ---------------------------------------------------------------------------------



def _approved(store: Any, since: datetime | None) -> list[_Approved]:
    """The latest signed version of each study (signed at/after `since`), in study-UID order."""
    from sqlalchemy import select

    from pipelines.store.models import ReportVersion, Signoff, StudyRecord

    stmt = (
        select(ReportVersion, Signoff.signed_at, StudyRecord.source, StudyRecord.metadata_json)
        .join(Signoff, Signoff.version_id == ReportVersion.id)
        .join(StudyRecord, StudyRecord.study_uid == ReportVersion.study_uid)
        .where(ReportVersion.status == "signed")
        .order_by(ReportVersion.study_uid, ReportVersion.version)
    )
    latest: dict[str, _Approved] = {}
    with store.transaction() as session:
        for row, signed_at, source, metadata in session.execute(stmt):
            if since is not None and as_utc(signed_at) < as_utc(since):
                continue
            latest[row.study_uid] = _Approved(  # ordered by version: the last one wins
                row.study_uid, source, dict(metadata or {}), row.version, row.findings, row.impression
            )
    return [latest[uid] for uid in sorted(latest)]


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


# ---- one study ------------------------------------------------------------------------------------


class _Skip(Exception):
    """A signed study that cannot be exported; `code` is a PHI-free reason."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _export_study(
    item: _Approved, out: Path, recipe: Any, key: bytes, fractions: tuple[float, float]
) -> tuple[dict[str, Any], list[str], bool]:
    """De-identify one study's images into `out`; returns its record, written files, and whether
    the report text needed redaction."""
    import pydicom

    from dicom_io.deid import deidentify, remap_uid
    from medvlm import labeler

    sources = [(p, v) for p, v in source_views(item.source, item.metadata) if p.is_file()]
    if not sources:
        raise _Skip("no_source_files")
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
        _write_if_changed(out / rel, buffer.getvalue())
        files.append(rel)
        views.append({"path": rel, "view": (view or str(new.get("ViewPosition", "") or "")).upper()})
    if not files:
        raise _Skip("needs_pixel_review" if review else "unreadable")
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


def _identifiers(ds: Any, study_uid: str) -> set[str]:
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
    pattern = re.compile(r"(?<![\w.])(?:" + "|".join(re.escape(w) for w in words) + r")(?![\w]|\.\d)", re.IGNORECASE)
    return pattern.subn(REDACTED, text)


def split_for(study_uid: str, fractions: tuple[float, float] = DEFAULT_SPLIT_FRACTIONS) -> str:
    """train / val / test from a hash of the (de-identified) study UID: stable for a study."""
    digest = hashlib.sha256(f"medvlm-export-split:{study_uid}".encode()).digest()
    x = int.from_bytes(digest[:8], "big") / 2.0**64
    if x < fractions[0]:
        return "train"
    return "val" if x < fractions[0] + fractions[1] else "test"


# ---- files ----------------------------------------------------------------------------------------


def _previous_files(out: Path) -> set[str]:
    """Files listed by an earlier export's manifest; refuses a non-empty folder without one."""
    if not out.exists():
        return set()
    if not out.is_dir():
        raise DatasetExportError(f"{out}: not a folder")
    manifest = out / MANIFEST_FILE
    if not manifest.is_file():
        if any(out.iterdir()):
            raise DatasetExportError(f"{out}: folder is not empty and holds no earlier export; choose an empty folder")
        return set()
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetExportError(f"{manifest}: unreadable manifest ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DatasetExportError(f"{manifest}: not a medvlm dataset export; choose an empty folder")
    return {str(f) for f in data.get("files", []) if isinstance(f, str)}


def _remove_stale(out: Path, stale: set[str]) -> int:
    """Remove files of an earlier export no longer in the set (and folders left empty)."""
    removed = 0
    root = out.resolve()
    for rel in sorted(stale):
        path = (out / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            continue  # a manifest never names a file outside the export
        path.unlink()
        removed += 1
        if path.parent != root and not any(path.parent.iterdir()):
            path.parent.rmdir()
    return removed


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write atomically, and only when the content differs (re-exports leave files untouched)."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
