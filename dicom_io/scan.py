"""Walking a source folder without trusting it: which entries are files to read, which are set aside.

A folder handed to `medvlm ingest` or `medvlm draft` may hold anything: names that are not UTF-8,
folders named ``x.dcm``, FIFOs, sockets, device files, link loops and links out of the folder.
`scan_folder` never opens an entry to classify it (``lstat`` only; opening a FIFO would block) and
returns every entry it does not read as a `SkippedEntry` with a reason, so that the caller records
it in quarantine instead of crashing or dropping it silently.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SkippedEntry:
    """A folder entry that is not read, with the reason (recorded in quarantine, never silently dropped).

    FIFOs, sockets and device files are never opened (opening a FIFO blocks), links are never
    followed out of the source folder, and a name that is not valid UTF-8 cannot be recorded
    faithfully in the store or a JSON file, so the file is set aside until it is renamed.
    """

    path: Path
    """The entry as found under the source folder (not resolved: it may be a link loop)."""
    code: str
    """Stable reason: ``fifo``, ``socket``, ``device_file``, ``symlink_loop``, ``broken_symlink``,
    ``symlink_outside_source``, ``symlink_to_folder``, ``folder_named_as_file``,
    ``file_name_not_utf8`` or ``unreadable_entry``."""
    detail: str
    """What it is, free of PHI (the name is not repeated here)."""
    hint: str
    """What the operator can do."""

    @property
    def name(self) -> str:
        """The entry's name, printable whatever bytes it holds (see `printable_name`)."""
        return printable_name(self.path.name)

    def as_record(self) -> dict[str, str]:
        """A JSON-ready quarantine record (same keys as `DicomIOError.as_record`)."""
        return {"code": self.code, "error": "SkippedEntry", "path": printable_name(os.path.abspath(self.path)),
                "detail": self.detail, "hint": self.hint}


def printable_name(name: str | os.PathLike[str]) -> str:
    """A path or name as printable text: undecodable bytes as ``\\xNN``, control characters escaped.

    Names come from the file system as ``str`` with lone surrogates for bytes that are not UTF-8
    (Python's surrogateescape); such a string cannot be encoded, printed or stored as UTF-8. This
    goes back to the bytes (`os.fsencode`) and decodes them with ``backslashreplace``.
    """
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def path_key(path: str | os.PathLike[str]) -> str:
    """A short stable hash of a (relative) path's bytes; works for names that are not UTF-8."""
    return hashlib.sha256(os.fsencode(Path(path).as_posix())).hexdigest()[:16]


_SPECIAL = ((stat.S_ISFIFO, "fifo", "a named pipe (FIFO), not a file; it was not opened"),
            (stat.S_ISSOCK, "socket", "a socket, not a file; it was not opened"),
            (stat.S_ISCHR, "device_file", "a character device, not a file; it was not opened"),
            (stat.S_ISBLK, "device_file", "a block device, not a file; it was not opened"))
_DICOM_SUFFIXES = (".dcm", ".dicom")
_PARTIAL_SUFFIXES = (".part", ".tmp", ".partial")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _classify_link(path: Path, root: Path) -> tuple[str, Path | None]:
    """``("file"|"folder", target)`` for a link that stays in `root`, else ``(reason code, None)``."""
    try:
        target = path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop as RuntimeError
        return "symlink_loop", None
    except FileNotFoundError:
        return "broken_symlink", None
    except OSError as exc:
        return ("symlink_loop" if exc.errno == 40 else "unreadable_entry"), None  # 40 = ELOOP
    if not target.is_relative_to(root):
        return "symlink_outside_source", None
    return ("folder" if target.is_dir() else "file"), target


_LINK_TEXT = {
    "symlink_loop": ("a symbolic link that loops", "remove or fix the link"),
    "broken_symlink": ("a symbolic link whose target does not exist", "remove or fix the link"),
    "symlink_outside_source": ("a symbolic link to a path outside the source folder; not followed",
                               "copy the file into the source folder"),
    "symlink_to_folder": ("a symbolic link to a folder; not followed (the folder is read where it lies)",
                          "nothing to do, or remove the link"),
    "unreadable_entry": ("an entry that cannot be examined", "check its permissions"),
}


def scan_folder(root: Path, *, exclude: Iterable[Path] = (), skip_partial: bool = True,
                ) -> tuple[list[Path], list[SkippedEntry]]:
    """Regular files under `root` and the entries set aside, both sorted; nothing is opened.

    Hidden entries (a leading dot), ``DICOMDIR`` and, with `skip_partial`, partial downloads
    (``.part``, ``.tmp``, ``.partial``) are left out on purpose. Every other entry that is not a
    regular file inside `root` is returned as a `SkippedEntry` with its reason (see its ``code``).
    A link to a regular file inside `root` is read through the link.

    Args:
        root: the source folder (resolved here).
        exclude: folders not to walk (e.g. an output folder inside the source).
        skip_partial: leave out partial downloads.

    Returns:
        ``(files, skipped)``.
    """
    root = Path(root).resolve()
    excluded = {Path(e).resolve() for e in exclude}
    files: list[Path] = []
    skipped: list[SkippedEntry] = []

    def skip(path: Path, code: str, detail: str = "", hint: str = "") -> None:
        text = _LINK_TEXT.get(code, (detail, hint))
        skipped.append(SkippedEntry(path, code, detail or text[0], hint or text[1]))

    def visit(folder: Path) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: os.fsencode(e.name))
        except OSError:
            skip(folder, "unreadable_entry", "a folder that cannot be listed", "check its permissions")
            return
        for entry in entries:
            name, path = entry.name, Path(entry.path)
            if name.startswith(".") or name == "DICOMDIR" or (skip_partial and name.endswith(_PARTIAL_SUFFIXES)):
                continue
            if not _utf8(name):
                skip(path, "file_name_not_utf8", "a name that is not valid UTF-8 cannot be recorded; not read",
                     "rename it with a UTF-8 name")
                continue
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                skip(path, "unreadable_entry")
                continue
            if stat.S_ISLNK(mode):
                kind, target = _classify_link(path, root)
                if kind == "file" and target is not None and stat.S_ISREG(target.stat().st_mode):
                    files.append(path)
                elif kind == "file":  # a link to a FIFO, socket or device inside the source
                    skip(path, "device_file", "a link to something that is not a file; not opened",
                         "remove the link")
                else:
                    skip(path, "symlink_to_folder" if kind == "folder" else kind)
            elif stat.S_ISDIR(mode):
                if path.resolve() in excluded:
                    continue
                if name.lower().endswith(_DICOM_SUFFIXES):
                    skip(path, "folder_named_as_file", "a folder named like a DICOM file; not read",
                         "rename the folder (or move its files out)")
                    continue
                visit(path)
            elif stat.S_ISREG(mode):
                files.append(path)
            else:
                code, detail = next(((c, d) for test, c, d in _SPECIAL if test(mode)),
                                    ("unreadable_entry", "not a regular file; not opened"))
                skip(path, code, detail, "remove it from the source folder")

    visit(root)
    return files, skipped
