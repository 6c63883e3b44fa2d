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

One study's images and text are handled in `pipelines.export.dataset_study`; the output folder
(file names, manifest check, idempotent writes) in `pipelines.export.dataset_folder`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compliance.clock import as_utc
from pipelines.export.dataset_folder import (
    FORMAT,
    MANIFEST_FILE,
    REPORTS_FILE,
    DatasetExportError,
    previous_files,
    remove_stale,
    write_if_changed,
)
from pipelines.export.dataset_study import (
    DEFAULT_SPLIT_FRACTIONS,
    REDACTED,
    StudySkipped,
    export_study,
    redact,
    source_views,
    split_for,
)

if TYPE_CHECKING:
    from pipelines.store import Store


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


def export_approved_pairs(
    store: Store,
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
    from pipelines.store.exports import approved_reports

    if len(split_fractions) != 2 or min(split_fractions) < 0 or sum(split_fractions) > 1:
        raise DatasetExportError(f"split_fractions must be two fractions >= 0 summing to <= 1, got {split_fractions}")
    parsed_recipe = load_recipe(recipe)
    key = load_key(Path(key_file) if key_file is not None else None)
    out = Path(out_dir)
    previous = previous_files(out)
    out.mkdir(parents=True, exist_ok=True)

    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    written: list[str] = []
    redacted = 0
    for item in approved_reports(store, since):
        try:
            record, files, was_redacted = export_study(item, out, parsed_recipe, key, split_fractions)
        except StudySkipped as skip:
            skipped.append({"study": store.pseudonym(item.study_uid), "code": skip.code})
            continue
        records.append(record)
        written += files
        redacted += was_redacted
    records.sort(key=lambda r: r["study_uid"])
    skipped.sort(key=lambda s: (s["code"], s["study"]))

    reports = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode("utf-8")
    write_if_changed(out / REPORTS_FILE, reports)
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
    write_if_changed(out / MANIFEST_FILE, manifest_bytes)
    removed = remove_stale(out, previous - set(written))
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


__all__ = [
    "DEFAULT_SPLIT_FRACTIONS",
    "FORMAT",
    "MANIFEST_FILE",
    "REDACTED",
    "REPORTS_FILE",
    "DatasetExportError",
    "ExportSummary",
    "export_approved_pairs",
    "redact",
    "source_views",
    "split_for",
]
