"""The de-identification job behind `medvlm deid SRC OUT`: a file or folder in, de-identified files out.

Output layout (no PHI in any name; files are named by their NEW UIDs):

    OUT/<new study_uid>/<new sop_uid>.dcm   de-identified instances, pixel data rebuilt (dicom_io.deid_pixels)
    OUT/deid_manifest.json                  recipe name, version and SHA-256; counts; outputs
    OUT/failed.jsonl                        one record per file that could not be de-identified
    OUT/needs_pixel_review.jsonl            outputs whose pixels may hold burned-in text

failed.jsonl names each bad source file by its path relative to SRC so the operator can fix it;
folder names chosen at the source may themselves identify someone, so failed.jsonl is for the
operator and is not part of a data release. No other output names a source file.

A bad file never stops the job: it is recorded with a stable reason code and the job goes on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compliance.deid_recipe import Recipe, load_recipe
from dicom_io.deid import deidentify, load_key
from dicom_io.errors import DeidentificationError, DicomIOError, DicomReadError
from dicom_io.reader import read

MANIFEST_NAME = "deid_manifest.json"
FAILED_NAME = "failed.jsonl"
PIXEL_REVIEW_NAME = "needs_pixel_review.jsonl"


class DuplicateInstance(DeidentificationError):
    """Two inputs of one run map to the same output file (same SOPInstanceUID)."""

    code = "duplicate_sop_instance_uid"


@dataclass(frozen=True)
class DeidSummary:
    """What one `run_deid` did.

    Args:
        files_in: files found under the source.
        files_written: de-identified files written.
        failed: one PHI-free record per failed file (`path`, `code`, `error`, `detail`, `hint`).
        needs_pixel_review: one record per written file needing a pixel check (`output`, `flags`).
        recipe_version: version of the recipe applied to every output.
        recipe_name: name of that recipe.
        out: the output folder.
    """

    files_in: int
    files_written: int
    failed: tuple[dict[str, Any], ...]
    needs_pixel_review: tuple[dict[str, Any], ...]
    recipe_version: str
    recipe_name: str
    out: Path

    def as_dict(self) -> dict[str, Any]:
        """Counts and the recipe version, for the CLI's summary table (details are in the OUT files)."""
        return {
            "files_in": self.files_in,
            "files_written": self.files_written,
            "failed": len(self.failed),
            "needs_pixel_review": len(self.needs_pixel_review),
            "recipe_version": self.recipe_version,
        }


def run_deid(
    src: Path,
    out: Path,
    *,
    recipe: Path | None = None,
    key_file: Path | None = None,
    progress: bool = True,
) -> DeidSummary:
    """De-identify a DICOM file or every file under a folder (walked recursively) into `out`.

    Args:
        src: a DICOM file, or a folder of them.
        out: output folder (created); files already there from an earlier run are overwritten.
        recipe: recipe YAML; None uses the versioned PS3.15 basic-profile recipe in `compliance/deid/`.
        key_file: secret key for UID remapping; None reads `$MEDVLM_DEID_KEY`.
        progress: show a Rich progress bar on stderr.

    Returns:
        A `DeidSummary`; its details are also written to `out` (see the module docstring).

    Raises:
        FileNotFoundError: `src` does not exist.
        DeidentificationError: no usable key (checked before any file is read).
        compliance.deid_recipe.RecipeError: the recipe file is missing or invalid.
    """
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"{src}: source not found")
    parsed_recipe = load_recipe(recipe)
    key = load_key(key_file)
    files = _list_files(src, out)
    out.mkdir(parents=True, exist_ok=True)

    failed: list[dict[str, Any]] = []
    review: list[dict[str, Any]] = []
    outputs: dict[Path, Path] = {}  # written output -> its source, to refuse silent overwrites
    with _progress_bar(progress) as bar:
        task = bar.add_task("de-identifying", total=len(files))
        for path in files:
            try:
                target, flags = _deid_one(path, out, parsed_recipe, key, outputs)
            except DicomIOError as exc:
                failed.append(_failure(exc, src))
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
                # The message of an unexpected error may quote header values: keep only its type.
                failed.append(_failure(DeidentificationError(path, f"unexpected {type(exc).__name__}"), src))
            else:
                outputs[target] = path
                if flags:  # the reviewer checks the de-identified output; no source path in OUT
                    review.append({"output": str(target.relative_to(out)), "flags": list(flags)})
            bar.advance(task)

    summary = DeidSummary(
        files_in=len(files), files_written=len(outputs), failed=tuple(failed), needs_pixel_review=tuple(review),
        recipe_version=parsed_recipe.version, recipe_name=parsed_recipe.name, out=out,
    )
    _write_jsonl(out / FAILED_NAME, failed)
    _write_jsonl(out / PIXEL_REVIEW_NAME, review)
    manifest = {
        "recipe_name": parsed_recipe.name,
        "recipe_version": parsed_recipe.version,
        "recipe_sha256": parsed_recipe.sha256,
        "deidentification_method": parsed_recipe.method,
        **summary.as_dict(),
        "outputs": sorted(str(p.relative_to(out)) for p in outputs),
    }
    _atomic_write(out / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return summary


def _failure(exc: DicomIOError, src: Path) -> dict[str, Any]:
    """A failed.jsonl record; the source file is named relative to SRC (the operator knows SRC)."""
    record = exc.as_record()
    if record["path"] and src.is_dir() and Path(record["path"]).is_relative_to(src):
        record["path"] = str(Path(record["path"]).relative_to(src))
    return record


def _list_files(src: Path, out: Path) -> list[Path]:
    """The files to process: `src` itself, or every file under it except those inside `out`."""
    if src.is_file():
        return [src]
    out_resolved = out.resolve()
    return sorted(
        p for p in src.rglob("*")
        if p.is_file() and not p.resolve().is_relative_to(out_resolved)
    )


def _deid_one(path: Path, out: Path, recipe: Recipe, key: bytes, outputs: dict[Path, Path]) -> tuple[Path, tuple[str, ...]]:
    """Read, de-identify and write one file; returns the output path and its pixel-review flags."""
    ds = read(path)  # the head is checked first: junk of any size costs one small read
    if getattr(ds, "file_meta", None) is None or "TransferSyntaxUID" not in ds.file_meta:
        raise DicomReadError(path, "no file meta / transfer syntax", "only DICOM Part 10 files are supported")
    result = deidentify(ds, recipe, key, path=path)
    new = result.dataset
    if "StudyInstanceUID" not in new or not str(new.StudyInstanceUID):
        raise DeidentificationError(path, "no StudyInstanceUID; cannot name the output folder")
    target = out / str(new.StudyInstanceUID) / f"{new.SOPInstanceUID}.dcm"
    if target in outputs:
        raise DuplicateInstance(path, "same SOPInstanceUID as another input file of this run; not overwritten",
                                "give each instance its own SOPInstanceUID")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".dcm.tmp")
    new.save_as(tmp, enforce_file_format=True)  # pixel data as rebuilt by deidentify
    os.replace(tmp, target)
    return target, result.flags


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    _atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode("utf-8"))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _progress_bar(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=False)
