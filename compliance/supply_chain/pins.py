"""Constraints-file parsing: the default paths, the input error, ``Pin`` and PEP 440 versions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONSTRAINTS = REPO_ROOT / "constraints.txt"
DEFAULT_ADVISORIES = Path(__file__).resolve().parents[1] / "advisories.yaml"

_PIN_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*(?P<version>[^\s;#]+)\s*(;.*)?$"
)
_NAME_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)")


class SupplyChainError(ValueError):
    """An input file (constraints or advisories) is missing or malformed; the message names the entry."""


@dataclass(frozen=True)
class Pin:
    """One line of a constraints file."""

    name: str
    """Canonical distribution name (PEP 503: lower case, runs of ``-_.`` as ``-``)."""
    version: str | None
    """The exact pinned version; None when the line is not an ``==`` pin."""
    line: int
    """1-based line number in the constraints file."""
    text: str
    """The requirement as written (comment stripped)."""


def parse_version(text: str, where: str) -> Version:
    """A PEP 440 version, or `SupplyChainError` naming `where`."""
    try:
        return Version(str(text))
    except InvalidVersion as exc:
        raise SupplyChainError(f"{where}: {text!r} is not a PEP 440 version") from exc


def parse_constraints(path: str | Path) -> list[Pin]:
    """Read a pip constraints/requirements file (comments, blank lines and ``-`` options skipped).

    Args:
        path: the file.

    Returns:
        One `Pin` per requirement line; `Pin.version` is None for lines that are not ``==`` pins.

    Raises:
        SupplyChainError: the file is missing, a line is not a requirement, or a package appears twice.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SupplyChainError(f"{path}: cannot read the constraints file ({type(exc).__name__})") from exc
    pins: list[Pin] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not text or text.startswith("-"):
            continue
        match = _PIN_RE.match(text)
        name_match = match or _NAME_RE.match(text)
        if name_match is None:
            raise SupplyChainError(f"{path}:{number}: not a requirement: {text!r}")
        name = canonicalize_name(name_match.group("name"))
        if name in seen:
            raise SupplyChainError(f"{path}:{number}: {name} is already pinned on line {seen[name]}")
        seen[name] = number
        version = match.group("version") if match else None
        if version is not None:
            parse_version(version, f"{path}:{number}")
        pins.append(Pin(name=name, version=version, line=number, text=text))
    return pins
