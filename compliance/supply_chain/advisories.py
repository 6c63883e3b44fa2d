"""The advisories gate: load ``advisories.yaml`` and check pinned (or installed) versions against it."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from compliance.supply_chain.pins import (
    DEFAULT_ADVISORIES,
    DEFAULT_CONSTRAINTS,
    Pin,
    SupplyChainError,
    parse_constraints,
    parse_version,
)

_ID_RE = re.compile(r"^(CVE-\d{4}-\d{4,}|GHSA(-[23456789cfghjmpqrvwx]{4}){3}|PYSEC-\d{4}-\d+)$")


@dataclass(frozen=True)
class Advisory:
    """One known vulnerability of one package."""

    id: str
    """Primary identifier: CVE-..., GHSA-... or PYSEC-...."""
    package: str
    """Canonical distribution name."""
    affected: tuple[SpecifierSet, ...]
    """Affected versions: a version is affected when any of these specifier sets contains it."""
    fixed: tuple[str, ...]
    """First fixed version on each maintained line; empty when there is no fix."""
    summary: str
    """One-line description."""
    aliases: tuple[str, ...] = ()
    """Other identifiers of the same advisory."""
    accepted: str | None = None
    """Why an affected version is tolerated (no fix exists); reported as a note, not a violation."""

    def affects(self, version: str) -> bool:
        """Whether `version` lies in an affected range (pre-releases included)."""
        return is_affected(version, self.affected)


@dataclass(frozen=True)
class AdvisoryDB:
    """The parsed advisories file."""

    advisories: tuple[Advisory, ...]
    """All advisories, in file order."""
    minimum_versions: dict[str, str] = field(default_factory=dict)
    """Canonical package name -> lowest acceptable version."""

    def for_package(self, name: str) -> list[Advisory]:
        """Advisories of one package (any spelling of its name)."""
        key = canonicalize_name(name)
        return [a for a in self.advisories if a.package == key]

    def packages(self) -> set[str]:
        """Every package named by an advisory or a minimum version."""
        return {a.package for a in self.advisories} | set(self.minimum_versions)


@dataclass(frozen=True)
class Violation:
    """A reason the gate fails (or, with `blocking=False`, a note)."""

    package: str
    """Canonical package name."""
    version: str | None
    """The version checked (pinned or installed); None for a line that is not a pin."""
    kind: str
    """advisory | minimum | not_pinned | accepted."""
    message: str
    """One line for the CI log."""
    advisory_id: str | None = None
    """The advisory id for kind advisory/accepted."""
    source: str = "constraints.txt"
    """Where the version came from: the constraints file or ``installed``."""
    blocking: bool = True
    """False for accepted advisories: printed, but the check passes."""


def parse_affected(value: str | Sequence[str], where: str = "affected") -> tuple[SpecifierSet, ...]:
    """Parse an affected range: one specifier string, a list of them, or alternatives joined by ``||``.

    Args:
        value: for example ``"<2.6.0"``, ``[">=2.0,<2.4.5", ">=3.0,<3.0.2"]`` or ``">=2,<2.4.5 || >=3,<3.0.2"``.
        where: names the entry in error messages.

    Returns:
        The alternatives; a version is affected when any of them contains it.

    Raises:
        SupplyChainError: empty, or not PEP 440 specifiers.
    """
    items = [value] if isinstance(value, str) else list(value or [])
    parts = [p.strip() for item in items for p in str(item).split("||")]
    if not parts or any(not p for p in parts):
        raise SupplyChainError(f"{where}: an affected range is empty")
    out = []
    for part in parts:
        try:
            spec = SpecifierSet(part)
        except InvalidSpecifier as exc:
            raise SupplyChainError(f"{where}: {part!r} is not a PEP 440 specifier set") from exc
        if not len(spec):
            raise SupplyChainError(f"{where}: {part!r} has no specifier")
        out.append(spec)
    return tuple(out)


def is_affected(version: str | Version, ranges: Iterable[SpecifierSet]) -> bool:
    """Whether `version` is in any of `ranges` (pre-releases and local versions like ``+cpu`` count)."""
    v = version if isinstance(version, Version) else Version(str(version))
    return any(spec.contains(v, prereleases=True) for spec in ranges)


def _str_list(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SupplyChainError(f"{where}: must be a string or a list of strings")
    return tuple(value)


def load_advisories(path: str | Path = DEFAULT_ADVISORIES) -> AdvisoryDB:
    """Load and validate the advisories file.

    Every advisory needs a valid id, a package, an affected range, fixed versions that are valid and
    outside the affected range, and a summary; one with no fixed version needs either `accepted` or
    it blocks every version forever (allowed: that is what the gate is for).

    Args:
        path: the YAML file (format in its header comment).

    Returns:
        The parsed `AdvisoryDB`.

    Raises:
        SupplyChainError: the file is missing or an entry is malformed (the message names the entry).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SupplyChainError(f"{path}: cannot read the advisories file ({type(exc).__name__})") from exc
    except yaml.YAMLError as exc:
        raise SupplyChainError(f"{path}: not valid YAML ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise SupplyChainError(f"{path}: expected a mapping with 'advisories' and 'minimum_versions'")
    minimum_raw = data.get("minimum_versions") or {}
    if not isinstance(minimum_raw, dict):
        raise SupplyChainError(f"{path}: minimum_versions must map package -> version")
    minimum = {}
    for name, version in minimum_raw.items():
        parse_version(str(version), f"minimum_versions.{name}")
        minimum[canonicalize_name(str(name))] = str(version)
    entries = data.get("advisories")
    if not isinstance(entries, list) or not entries:
        raise SupplyChainError(f"{path}: 'advisories' must be a non-empty list")
    advisories = []
    ids: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"advisories[{index}]"
        if not isinstance(entry, dict):
            raise SupplyChainError(f"{where}: must be a mapping")
        unknown = set(entry) - {"id", "aliases", "package", "affected", "fixed", "summary", "accepted"}
        if unknown:
            raise SupplyChainError(f"{where}: unknown keys {sorted(unknown)}")
        adv_id = str(entry.get("id") or "")
        where = f"advisories[{index}] ({adv_id or 'no id'})"
        if not _ID_RE.match(adv_id):
            raise SupplyChainError(f"{where}: id must be CVE-YYYY-NNNN, GHSA-xxxx-xxxx-xxxx or PYSEC-YYYY-N")
        aliases = _str_list(entry.get("aliases"), f"{where}.aliases")
        for alias in aliases:
            if not _ID_RE.match(alias):
                raise SupplyChainError(f"{where}: alias {alias!r} is not a CVE/GHSA/PYSEC id")
        package = entry.get("package")
        if not isinstance(package, str) or not package.strip():
            raise SupplyChainError(f"{where}: package is required")
        if "affected" not in entry:
            raise SupplyChainError(f"{where}: affected is required")
        affected = parse_affected(entry["affected"], f"{where}.affected")
        fixed = _str_list(entry.get("fixed"), f"{where}.fixed")
        for version in fixed:
            if is_affected(parse_version(version, f"{where}.fixed"), affected):
                raise SupplyChainError(f"{where}: fixed version {version} lies inside the affected range")
        summary = entry.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise SupplyChainError(f"{where}: summary is required")
        accepted = entry.get("accepted")
        if accepted is not None and (not isinstance(accepted, str) or not accepted.strip()):
            raise SupplyChainError(f"{where}: accepted must be a non-empty reason")
        if accepted is not None and fixed:
            raise SupplyChainError(f"{where}: a fixed release exists; upgrade instead of accepting the risk")
        key = f"{canonicalize_name(package)}:{adv_id}"
        if key in ids:
            raise SupplyChainError(f"{where}: duplicate advisory for {package}")
        ids.add(key)
        advisories.append(
            Advisory(
                id=adv_id,
                package=canonicalize_name(package),
                affected=affected,
                fixed=fixed,
                summary=" ".join(summary.split()),
                aliases=aliases,
                accepted=" ".join(accepted.split()) if accepted else None,
            )
        )
    return AdvisoryDB(advisories=tuple(advisories), minimum_versions=minimum)


def installed_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of the given distributions (absent ones are left out)."""
    out = {}
    for name in names:
        try:
            out[canonicalize_name(name)] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def check_versions(
    pins: Sequence[Pin], db: AdvisoryDB, installed: Mapping[str, str] | None = None
) -> list[Violation]:
    """Check pins (and, for packages the pins omit, installed versions) against the advisories.

    Args:
        pins: from `parse_constraints`.
        db: from `load_advisories`.
        installed: canonical name -> installed version, consulted only for packages that `db` names
            and `pins` does not; None checks the pins alone.

    Returns:
        Violations (blocking) and accepted advisories (non-blocking), sorted by package.
    """
    problems: list[Violation] = []
    versions: dict[str, tuple[str, str]] = {}
    for pin in pins:
        if pin.version is None:
            problems.append(
                Violation(
                    pin.name,
                    None,
                    "not_pinned",
                    f"{pin.name}: line {pin.line} ({pin.text!r}) is not an exact == pin",
                )
            )
        else:
            versions[pin.name] = (pin.version, "constraints.txt")
    for name, version in (installed or {}).items():
        key = canonicalize_name(name)
        if key in db.packages() and key not in versions and not any(p.name == key for p in pins):
            versions[key] = (version, "installed")
    for name, (version, source) in sorted(versions.items()):
        minimum = db.minimum_versions.get(name)
        if minimum is not None and Version(version) < Version(minimum):
            problems.append(
                Violation(
                    name,
                    version,
                    "minimum",
                    f"{name}=={version} ({source}) is below the minimum version {minimum}",
                    source=source,
                )
            )
        for adv in db.for_package(name):
            if not adv.affects(version):
                continue
            if adv.accepted:
                problems.append(
                    Violation(
                        name,
                        version,
                        "accepted",
                        f"{name}=={version} ({source}) is affected by {adv.id}, accepted: {adv.accepted}",
                        advisory_id=adv.id,
                        source=source,
                        blocking=False,
                    )
                )
            else:
                fix = (
                    f"upgrade to {' or '.join(adv.fixed)}"
                    if adv.fixed
                    else "no fixed release: remove or replace it"
                )
                problems.append(
                    Violation(
                        name,
                        version,
                        "advisory",
                        f"{name}=={version} ({source}) is affected by {adv.id}: {adv.summary} ({fix})",
                        advisory_id=adv.id,
                        source=source,
                    )
                )
    return sorted(problems, key=lambda v: (v.package, v.kind, v.advisory_id or ""))


def run_check(
    constraints: str | Path = DEFAULT_CONSTRAINTS,
    advisories: str | Path = DEFAULT_ADVISORIES,
    *,
    use_installed: bool = True,
) -> list[Violation]:
    """Parse both files and check (the whole ``check`` command without printing).

    Args:
        constraints: the constraints file.
        advisories: the advisories file.
        use_installed: also check installed versions of advised packages that are not pinned.

    Returns:
        As `check_versions`.

    Raises:
        SupplyChainError: an input file is unusable.
    """
    pins = parse_constraints(constraints)
    db = load_advisories(advisories)
    installed = installed_versions(db.packages()) if use_installed else None
    return check_versions(pins, db, installed)
