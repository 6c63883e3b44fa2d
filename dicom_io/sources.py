"""Where studies come from: a folder (optionally watched), and the shared types of every source.

A *source* yields `FetchedStudy` records: the local DICOM files of one study (paths in a folder the
batch job can read) and a stable study key (the Study Instance UID when the files carry one), so
the job can tell a new study from one it has seen and resume after a crash. The PACS sources live
in `dicom_io.dicomweb` (QIDO-RS + WADO-RS) and `dicom_io.dimse` (C-FIND + C-MOVE / C-GET); they
write what they retrieve into a work folder and yield the same records.

Only pydicom is imported here; pynetdicom and dicomweb-client are imported by their own modules.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dicom_io.errors import DicomIOError
from dicom_io.scan import SkippedEntry, path_key, scan_folder

FOLDER, DICOMWEB, DIMSE = "folder", "dicomweb", "dimse"
CHEST_MODALITIES = ("CR", "DX")
"""Modalities queried by default: the pipeline only drafts chest radiographs."""


class PacsError(DicomIOError):
    """A PACS (DIMSE or DICOMweb peer) could not be reached or refused a request.

    The path slot holds the peer's address (``host:port`` or URL), never patient data.
    """

    code = "pacs_error"


class PacsUnreachable(PacsError):
    """No connection or association could be established (wrong host/port, peer down, timeout)."""

    code = "pacs_unreachable"


class PacsRefused(PacsError):
    """The peer answered but refused: association rejected/aborted, HTTP 4xx/5xx, failure status."""

    code = "pacs_refused"


class SourceError(DicomIOError):
    """A source was configured wrongly (missing folder, bad date range, ...)."""

    code = "bad_source"


@dataclass(frozen=True)
class FetchedStudy:
    """The local files of one study, as handed to the batch job."""

    study_key: str
    """Stable key: the Study Instance UID, or ``file-<hash of the relative path>`` for a file
    without one (unreadable files still go to the job, which quarantines them with a reason)."""
    files: tuple[Path, ...]
    """Local DICOM files of the study, sorted by path."""
    source: str
    """Which kind of source produced it: ``folder``, ``dicomweb`` or ``dimse``."""
    skipped: tuple[SkippedEntry, ...] = ()
    """Entries of the source that were set aside unread (a folder source yields each alone, under
    ``file-<hash of its relative path>`` and with no files); the job quarantines them."""


class StudySource(Protocol):
    """Anything that yields studies as local files."""

    def studies(self) -> Iterator[FetchedStudy]:
        """Yield each study once (a watched folder may yield a key again with later files)."""
        ...


def study_key_of(path: Path, root: Path | None = None) -> str:
    """The study key of one file: its StudyInstanceUID, else a hash of its path.

    Args:
        path: a local file.
        root: the folder the file was found under; the fallback hash uses the path relative to it,
            so the key survives moving the whole folder.

    Returns:
        The key (a UID string, or ``file-`` followed by 16 hex digits).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        uid = str(ds.get("StudyInstanceUID", "") or "").strip()
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError, KeyError):
        uid = ""
    if uid:
        return uid
    rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else path
    return "file-" + path_key(rel)


def group_files(paths: Iterable[Path], source: str, root: Path | None = None) -> list[FetchedStudy]:
    """Group files into `FetchedStudy` records by study key, in a stable order (by key).

    Args:
        paths: local files.
        source: the source label stored in each record.
        root: the folder the files were found under (see `study_key_of`).

    Returns:
        One record per study key, files sorted by path.
    """
    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(study_key_of(path, root), []).append(path)
    return [FetchedStudy(key, tuple(sorted(files)), source) for key, files in sorted(groups.items())]


def skipped_studies(skipped: Iterable[SkippedEntry], source: str, root: Path) -> list[FetchedStudy]:
    """One `FetchedStudy` per skipped entry (no files; key from its relative path) for the job to record."""
    out = []
    for entry in skipped:
        rel = entry.path.relative_to(root) if entry.path.is_relative_to(root) else entry.path
        out.append(FetchedStudy("file-" + path_key(rel), (), source, (entry,)))
    return out


class FolderSource:
    """Studies from a folder of DICOM files; optionally watch it for new files.

    Without `watch`, `studies()` scans the folder once and yields every study. With `watch`, it
    polls every `interval_s` seconds and yields the files that appeared since the last yield, once
    their size and modification time stayed the same over one poll (a file still being copied is
    not handed out) and their study had no new file for one poll. A study whose files trickle in
    over several polls is yielded again under the same key with only the new files; the batch job
    merges by key. Watching ends after `idle_timeout_s` seconds without a new file, after
    `max_polls` polls, or when `stop` is set; all three are bounded so tests and jobs never hang.

    Args:
        root: the folder to read.
        watch: poll for new files instead of scanning once.
        interval_s: seconds between polls (watch mode).
        idle_timeout_s: end watching after this many seconds with no new file; None = only `max_polls`
            or `stop` end it.
        max_polls: hard cap on the number of polls (watch mode); None = unbounded.
        stop: an event that ends watching at the next poll.

    Raises:
        SourceError: `root` is not a folder, or a bound is not positive.
    """

    def __init__(self, root: str | Path, watch: bool = False, *, interval_s: float = 2.0,
                 idle_timeout_s: float | None = 60.0, max_polls: int | None = None,
                 stop: threading.Event | None = None) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise SourceError(self.root, "source folder does not exist or is not a folder",
                              "pass an existing folder of DICOM files")
        if interval_s <= 0:
            raise SourceError(self.root, f"interval_s must be > 0, got {interval_s}", "set interval_s")
        if watch and idle_timeout_s is None and max_polls is None and stop is None:
            raise SourceError(self.root, "a watched folder needs an end", "set idle_timeout_s, max_polls or stop")
        self.watch = watch
        self.interval_s = interval_s
        self.idle_timeout_s = idle_timeout_s
        self.max_polls = max_polls
        self.stop = stop

    def studies(self) -> Iterator[FetchedStudy]:
        """Yield the studies of the folder (once, or as they arrive when watching)."""
        if not self.watch:
            files, skipped = scan_folder(self.root)
            yield from group_files(files, FOLDER, self.root)
            yield from skipped_studies(skipped, FOLDER, self.root)
            return
        yield from self._watch()

    def _watch(self) -> Iterator[FetchedStudy]:
        emitted: set[Path] = set()
        reported: set[tuple[Path, str]] = set()  # skipped entries already handed out
        last_seen: dict[Path, tuple[int, int]] = {}   # path -> (size, mtime_ns) at the previous poll
        last_new = time.monotonic()
        polls = 0
        while True:
            polls += 1
            current: dict[Path, tuple[int, int]] = {}
            files, skipped = scan_folder(self.root)
            fresh = [e for e in skipped if (e.path, e.code) not in reported]
            reported.update((e.path, e.code) for e in fresh)
            yield from skipped_studies(fresh, FOLDER, self.root)
            for path in files:
                if path in emitted:
                    continue
                try:
                    st = path.stat()
                except OSError:  # removed between listing and stat
                    continue
                current[path] = (st.st_size, st.st_mtime_ns)
            if any(p not in last_seen for p in current):
                last_new = time.monotonic()
            stable = [p for p, sig in current.items() if last_seen.get(p) == sig and sig[0] > 0]
            unstable = [p for p in current if p not in stable]
            ready = group_files(stable, FOLDER, self.root)
            # Hold back a study while one of its files is still changing or just appeared.
            busy = {study_key_of(p, self.root) for p in unstable} if unstable else set()
            for study in ready:
                if study.study_key in busy:
                    continue
                emitted.update(study.files)
                yield study
            last_seen = current
            if self.stop is not None and self.stop.is_set():
                return
            if self.max_polls is not None and polls >= self.max_polls:
                return
            if (self.idle_timeout_s is not None and not current
                    and time.monotonic() - last_new >= self.idle_timeout_s):
                return
            if self.stop is not None:
                if self.stop.wait(self.interval_s):
                    return
            else:
                time.sleep(self.interval_s)


def safe_dirname(key: str) -> str:
    """A folder name for a study key (UIDs are digits and dots; anything else is replaced)."""
    cleaned = "".join(c if c.isalnum() or c in ".-_" else "_" for c in key)
    return cleaned[:128] or "unknown"


def dicom_date_range(date_from: str | None, date_to: str | None) -> str | None:
    """A DICOM DA range (``YYYYMMDD-YYYYMMDD``, open ends allowed) or None for no filter.

    Raises:
        SourceError: a date is not 8 digits, or the range is reversed.
    """
    for value in (date_from, date_to):
        if value is not None and not (len(value) == 8 and value.isdigit()):
            raise SourceError(None, f"date {value!r} is not YYYYMMDD", "pass dates as YYYYMMDD")
    if date_from and date_to and date_from > date_to:
        raise SourceError(None, f"date range {date_from}-{date_to} is reversed", "swap date_from and date_to")
    if not date_from and not date_to:
        return None
    if date_from == date_to:
        return date_from
    return f"{date_from or ''}-{date_to or ''}"
