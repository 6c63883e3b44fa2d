"""The risk register (ISO 14971 style): hazard -> mitigation -> the test that proves it.

``compliance/risk_register.yaml`` lists hazards; each names its harm, severity and one or more
mitigations, and every mitigation names the pytest node ids (``tests/x/test_y.py::test_z``) that
show the control works. `validate_register` checks that every referenced test file exists and that
the function is defined in it, so a renamed or deleted test breaks the register's test, not silently
the evidence. ``python -m compliance.risk check`` runs the same validation;
``python -m compliance.risk markdown`` prints the register as a Markdown table (generated, never
hand-edited).

Standard library + ``yaml`` only.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REGISTER = Path(__file__).resolve().parent / "risk_register.yaml"
SEVERITIES = ("negligible", "minor", "serious", "critical", "catastrophic")
PROBABILITIES = ("improbable", "remote", "occasional", "probable", "frequent")
_HAZARD_ID_RE = re.compile(r"^H-\d{2,3}$")
_NODE_RE = re.compile(r"^(?P<file>tests/[\w/.-]+\.py)::(?P<parts>[A-Za-z_]\w*(::[A-Za-z_]\w*)*)(\[[^\]]*\])?$")


class RiskRegisterError(ValueError):
    """The register is missing, malformed, or references a test that does not exist."""


@dataclass(frozen=True)
class Mitigation:
    """One risk control and its evidence."""

    control: str
    """What the software does to reduce the risk."""
    tests: tuple[str, ...]
    """Pytest node ids that prove the control (``tests/...py::test_name``)."""


@dataclass(frozen=True)
class Hazard:
    """One hazard of the register."""

    id: str
    """``H-NN``, unique."""
    hazard: str
    """The hazardous situation."""
    cause: str
    """The sequence of events that leads to it."""
    harm: str
    """The harm to a patient, user or third party."""
    severity: str
    """One of `SEVERITIES`."""
    probability: str
    """Probability of harm before the controls, one of `PROBABILITIES`."""
    mitigations: tuple[Mitigation, ...]
    """Risk controls (at least one)."""
    residual: str
    """The residual risk after the controls, and why it is acceptable."""

    def tests(self) -> list[str]:
        """Every test node id named by this hazard's mitigations."""
        return [t for m in self.mitigations for t in m.tests]


def _text(entry: dict, key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RiskRegisterError(f"{where}: '{key}' is required (a non-empty string)")
    return " ".join(value.split())


def load_register(path: str | Path = DEFAULT_REGISTER) -> list[Hazard]:
    """Load the register and check its structure (not yet the tests; see `validate_register`).

    Args:
        path: the YAML file.

    Returns:
        The hazards in file order.

    Raises:
        RiskRegisterError: missing file, bad YAML, a missing field, an unknown severity or
            probability, a duplicate id, a hazard without mitigation or a mitigation without test.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RiskRegisterError(f"{path}: cannot read the risk register ({type(exc).__name__})") from exc
    except yaml.YAMLError as exc:
        raise RiskRegisterError(f"{path}: not valid YAML ({type(exc).__name__})") from exc
    entries = data.get("hazards") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise RiskRegisterError(f"{path}: 'hazards' must be a non-empty list")
    hazards: list[Hazard] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"hazards[{index}]"
        if not isinstance(entry, dict):
            raise RiskRegisterError(f"{where}: must be a mapping")
        hid = str(entry.get("id") or "")
        where = f"hazards[{index}] ({hid or 'no id'})"
        if not _HAZARD_ID_RE.match(hid):
            raise RiskRegisterError(f"{where}: id must look like H-01")
        if hid in seen:
            raise RiskRegisterError(f"{where}: duplicate id")
        seen.add(hid)
        severity = _text(entry, "severity", where)
        if severity not in SEVERITIES:
            raise RiskRegisterError(f"{where}: severity must be one of {SEVERITIES}, got {severity!r}")
        probability = _text(entry, "probability", where)
        if probability not in PROBABILITIES:
            raise RiskRegisterError(f"{where}: probability must be one of {PROBABILITIES}, got {probability!r}")
        raw_mitigations = entry.get("mitigations")
        if not isinstance(raw_mitigations, list) or not raw_mitigations:
            raise RiskRegisterError(f"{where}: at least one mitigation is required")
        mitigations = []
        for j, m in enumerate(raw_mitigations):
            mwhere = f"{where}.mitigations[{j}]"
            if not isinstance(m, dict):
                raise RiskRegisterError(f"{mwhere}: must be a mapping with 'control' and 'tests'")
            tests = m.get("tests")
            if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
                raise RiskRegisterError(f"{mwhere}: 'tests' must list at least one pytest node id")
            mitigations.append(Mitigation(control=_text(m, "control", mwhere), tests=tuple(tests)))
        hazards.append(Hazard(
            id=hid, hazard=_text(entry, "hazard", where), cause=_text(entry, "cause", where),
            harm=_text(entry, "harm", where), severity=severity, probability=probability,
            mitigations=tuple(mitigations), residual=_text(entry, "residual", where),
        ))
    return hazards


def node_problem(node: str, repo_root: str | Path = REPO_ROOT) -> str | None:
    """Why a pytest node id does not resolve to a test in the repository, or None when it does.

    The file must exist under ``tests/`` and define each named class and the function
    (``def name(``); a parametrisation suffix ``[...]`` is ignored.

    Args:
        node: ``tests/pkg/test_x.py::test_y`` or ``tests/pkg/test_x.py::TestClass::test_y``.
        repo_root: the repository root the path is relative to.

    Returns:
        A message naming what is missing, or None.
    """
    match = _NODE_RE.match(node)
    if match is None:
        return f"{node}: not a pytest node id like tests/pkg/test_x.py::test_name"
    path = Path(repo_root) / match.group("file")
    if not path.is_file():
        return f"{node}: file {match.group('file')} does not exist"
    source = path.read_text(encoding="utf-8")
    *classes, function = match.group("parts").split("::")
    for cls in classes:
        if not re.search(rf"^\s*class\s+{re.escape(cls)}\b", source, re.MULTILINE):
            return f"{node}: class {cls} is not defined in {match.group('file')}"
    if not re.search(rf"^\s*(async\s+)?def\s+{re.escape(function)}\s*\(", source, re.MULTILINE):
        return f"{node}: function {function} is not defined in {match.group('file')}"
    return None


def validate_register(hazards: Sequence[Hazard], repo_root: str | Path = REPO_ROOT) -> list[str]:
    """Every problem with the tests a register names (empty when all resolve).

    Args:
        hazards: from `load_register`.
        repo_root: the repository root.

    Returns:
        One message per unresolvable node id, prefixed with the hazard id.
    """
    return [f"{h.id}: {problem}" for h in hazards for node in h.tests()
            if (problem := node_problem(node, repo_root)) is not None]


def register_markdown(hazards: Sequence[Hazard]) -> str:
    """The register as a Markdown document (one row per hazard, tests as code spans)."""

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    lines = [
        "# Risk register",
        "",
        "Generated by `python -m compliance.risk markdown` from `compliance/risk_register.yaml`.",
        "",
        "| Id | Hazard | Harm | Severity | Probability | Controls (tests) | Residual risk |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in hazards:
        controls = "<br>".join(
            cell(m.control) + " (" + ", ".join(f"`{t}`" for t in m.tests) + ")" for m in h.mitigations
        )
        lines.append(f"| {h.id} | {cell(h.hazard)} | {cell(h.harm)} | {h.severity} | {h.probability} | "
                     f"{controls} | {cell(h.residual)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m compliance.risk {check,markdown} [--register F]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m compliance.risk", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("check", "markdown"))
    parser.add_argument("--register", type=Path, default=DEFAULT_REGISTER, help="risk register YAML")
    args = parser.parse_args(argv)
    try:
        hazards = load_register(args.register)
    except RiskRegisterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "markdown":
        sys.stdout.write(register_markdown(hazards))
        return 0
    problems = validate_register(hazards)
    for problem in problems:
        print(problem)
    n_tests = sum(len(h.tests()) for h in hazards)
    print(f"{len(hazards)} hazards, {n_tests} test references, {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
