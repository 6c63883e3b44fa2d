"""`medvlm ingest`: a folder of DICOM (and PNG/JPEG) files → studies.jsonl + quarantine/.

Each file is read, gated (chest CR/DX) before its pixels are decoded, then decoded and normalised
(which proves the pixels are usable): `dicom_io.gate.load_chest_image`. Nothing stops the run: a
file that fails gets one JSON record in ``quarantine/<name>.json`` (code, error, detail, hint, path) and a
hard link (or copy) in ``quarantine/files/``; ``<name>`` is a hash of its path relative to SRC,
so a re-run overwrites instead of duplicating, and records of files that now pass are removed.

Outputs are rewritten atomically (temporary file + rename): running twice gives identical
files. Two files with the same SOP Instance UID: the first in sorted path order is kept, the
other is quarantined as ``duplicate``. Hidden files, ``DICOMDIR`` and the output folder (when it
lies inside SRC) are not read. Entries that are not regular files inside SRC (FIFOs, sockets, device
files, link loops, links out of SRC, folders named ``*.dcm``) and names that are not UTF-8 are never
opened: each gets a quarantine record with its reason (`dicom_io.scan.scan_folder`), without a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_io.errors import DicomIOError
from dicom_io.gate import load_chest_image
from dicom_io.normalise import WINDOWS
from dicom_io.scan import SkippedEntry, printable_name, scan_folder
from dicom_io.study import DuplicateInstance, ImageMeta, group_studies
from pipelines.errors import PipelineError

STUDIES_FILE = "studies.jsonl"
QUARANTINE_DIR = "quarantine"


class IngestError(PipelineError, ValueError):
    """Bad ingest arguments (unknown intensity window)."""


@dataclass(frozen=True)
class IngestSummary:
    """Counts of one ingest run."""

    files_seen: int
    """Entries walked (hidden files, DICOMDIR and the output folder excluded), set-aside ones included."""
    images_accepted: int
    """Images written to studies.jsonl."""
    studies: int
    """Studies written to studies.jsonl."""
    quarantined: int
    """Files quarantined."""
    by_reason: dict[str, int] = field(default_factory=dict)
    """Quarantined files per reason code (not_chest_radiograph, unreadable, duplicate ...)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {"files_seen": self.files_seen, "images_accepted": self.images_accepted, "studies": self.studies,
                "quarantined": self.quarantined, "by_reason": dict(sorted(self.by_reason.items()))}


def _walk(src: Path, out: Path) -> tuple[list[Path], list[SkippedEntry]]:
    """Files under `src` and the entries set aside (see `dicom_io.scan.scan_folder`); `out` is not walked."""
    if src.is_file():
        return [src], []
    return scan_folder(src, exclude=[out], skip_partial=False)


def _stable_name(relative: str) -> str:
    return hashlib.sha256(os.fsencode(relative)).hexdigest()[:20]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _link_atomic(source: Path, target: Path) -> None:
    """Hard-link `source` at `target` (copy across file systems), replacing any older entry."""
    if target.exists() and target.stat().st_size == source.stat().st_size and \
            (os.path.samefile(source, target) or target.read_bytes() == source.read_bytes()):
        return
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)


def _relative(path: Path, root: Path) -> str:
    """`path` relative to `root` (links not resolved: a skipped entry may be a link loop)."""
    absolute = Path(os.path.abspath(path))
    return absolute.relative_to(root).as_posix() if absolute.is_relative_to(root) else path.name


def _quarantine_record(exc: BaseException, path: Path, relative: str) -> dict[str, Any]:
    if isinstance(exc, DicomIOError):
        record: dict[str, Any] = dict(exc.as_record())
    else:  # only the type name: the message of an unexpected error may quote header values (PHI)
        record = {"code": "internal_error", "error": type(exc).__name__, "path": None,
                  "detail": "unexpected error while ingesting this file",
                  "hint": "report it to the maintainers (send the error type, not the file)"}
    record["path"] = printable_name(path.resolve())
    record["relative_path"] = printable_name(relative)
    return record


def run_ingest(src: Path, out: Path, *, window: str = "auto", progress: bool = True) -> IngestSummary:
    """Ingest a folder: studies.jsonl for accepted images, quarantine/ for the rest.

    Args:
        src: folder walked recursively (or a single file).
        out: output folder (created); gets ``studies.jsonl`` (one study per line, sorted by
            study UID, each image with source and relative path, UIDs, view, modality, shape and
            full `ImageMeta`) and ``quarantine/``.
        window: intensity rule used to validate normalisation (see `dicom_io.normalise`).
        progress: show a Rich progress bar on stderr.

    Returns:
        The counts.

    Raises:
        FileNotFoundError: `src` does not exist.
        IngestError: unknown `window`.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"{src}: source folder not found")
    if window not in WINDOWS:
        raise IngestError(f"--window must be one of {', '.join(WINDOWS)}; got {window!r}")
    root = src.resolve() if src.is_dir() else src.resolve().parent
    files, skipped = _walk(src, out)
    quarantine = out / QUARANTINE_DIR
    (quarantine / "files").mkdir(parents=True, exist_ok=True)

    accepted: dict[str, ImageMeta] = {}
    kept_from: dict[str, str] = {}
    records: dict[str, tuple[dict[str, Any], Path | None]] = {}
    for entry in skipped:
        relative = _relative(entry.path, root)
        records[_stable_name(relative)] = ({**entry.as_record(), "relative_path": printable_name(relative)}, None)
    columns = (TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=False) as bar:
        task = bar.add_task("ingest", total=len(files))
        for path in files:
            relative = _relative(path, root)
            try:
                _, meta = load_chest_image(path, window=window)
                if meta.sop_uid in accepted:
                    raise DuplicateInstance(path, f"same SOP Instance UID as {kept_from[meta.sop_uid]}, which was kept",
                                            "remove one of the two files")
                accepted[meta.sop_uid] = meta
                kept_from[meta.sop_uid] = relative
            except Exception as exc:  # noqa: BLE001 - a bad file must never stop the batch
                records[_stable_name(relative)] = (_quarantine_record(exc, path, relative), path)
            bar.advance(task)

    studies = group_studies(accepted.values())
    lines = [json.dumps(study.to_dict(root=root), sort_keys=True) for study in studies]
    _write_atomic(out / STUDIES_FILE, "".join(line + "\n" for line in lines))
    for name, (record, path) in sorted(records.items()):
        if path is not None:  # set-aside entries (FIFOs, links ...) are never opened, so never copied
            stored = f"{name}{printable_name(path.suffix.lower())}"
            _link_atomic(path, quarantine / "files" / stored)
            record["stored_file"] = f"files/{stored}"
        _write_atomic(quarantine / f"{name}.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    _remove_stale(quarantine, set(records))
    by_reason = Counter(record["code"] for record, _ in records.values())
    return IngestSummary(files_seen=len(files) + len(skipped), images_accepted=len(accepted), studies=len(studies),
                         quarantined=len(records), by_reason=dict(by_reason))


def _remove_stale(quarantine: Path, names: set[str]) -> None:
    """Delete quarantine entries of files that no longer fail (or no longer exist)."""
    for entry in quarantine.glob("*.json"):
        if entry.stem not in names:
            entry.unlink()
    for entry in (quarantine / "files").iterdir():
        if entry.name.split(".")[0] not in names:
            entry.unlink()
