"""The dataset export's output folder: file names, the manifest check, atomic and idempotent writes.

A re-export into the same folder rewrites only what changed and removes only the files an
earlier export listed in its manifest; a folder holding anything else is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipelines.errors import PipelineError

REPORTS_FILE = "reports.jsonl"
MANIFEST_FILE = "manifest.json"
FORMAT = "medvlm-export/1"


class DatasetExportError(PipelineError, RuntimeError):
    """The export cannot be done (the output folder holds something else, bad fractions)."""


def previous_files(out: Path) -> set[str]:
    """Files listed by an earlier export's manifest; refuses a non-empty folder without one."""
    if not out.exists():
        return set()
    if not out.is_dir():
        raise DatasetExportError(f"{out}: not a folder")
    manifest = out / MANIFEST_FILE
    if not manifest.is_file():
        if any(out.iterdir()):
            raise DatasetExportError(
                f"{out}: folder is not empty and holds no earlier export; choose an empty folder"
            )
        return set()
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetExportError(f"{manifest}: unreadable manifest ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DatasetExportError(f"{manifest}: not a medvlm dataset export; choose an empty folder")
    return {str(f) for f in data.get("files", []) if isinstance(f, str)}


def remove_stale(out: Path, stale: set[str]) -> int:
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


def write_if_changed(path: Path, data: bytes) -> None:
    """Write atomically, and only when the content differs (re-exports leave files untouched)."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
