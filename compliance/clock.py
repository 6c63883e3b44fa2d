"""Time and file fingerprints shared by every layer (the lowest package, so everyone may import it)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

_CHUNK = 1 << 20


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (every stored timestamp is UTC)."""
    return datetime.now(UTC)


def as_utc(ts: datetime | None) -> datetime | None:
    """``ts`` as aware UTC; SQLite hands back naive datetimes, and every one of ours was written as UTC."""
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def sha256_file(path: str | Path) -> str:
    """sha256 hex of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tree(root: str | Path, files: Iterable[str | Path]) -> str:
    """One sha256 over (relative path, sha256 of bytes) pairs, in path order: a folder's identity."""
    root = Path(root)
    pairs = sorted((Path(f).resolve().relative_to(root.resolve()).as_posix(), sha256_file(f)) for f in files)
    h = hashlib.sha256()
    for name, digest in pairs:
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()
