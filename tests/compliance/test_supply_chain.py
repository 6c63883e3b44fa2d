"""The advisory gate on constraints.txt and the SOUP list generated from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version

from compliance.supply_chain import (
    DEFAULT_ADVISORIES,
    DEFAULT_CONSTRAINTS,
    SupplyChainError,
    check_versions,
    is_affected,
    load_advisories,
    main,
    parse_affected,
    parse_constraints,
    run_check,
    soup_markdown,
)

ROOT = Path(__file__).resolve().parents[2]


def _constraints(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "constraints.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_real_constraints_pass_the_gate():
    found = run_check(DEFAULT_CONSTRAINTS, DEFAULT_ADVISORIES, use_installed=True)
    blocking = [v.message for v in found if v.blocking]
    assert blocking == []
    # The gate really looked: every package with a minimum version is pinned or installed here.
    db = load_advisories()
    pinned = {p.name for p in parse_constraints(DEFAULT_CONSTRAINTS)}
    assert {"pydicom", "torch", "streamlit", "mlflow"} <= pinned & set(db.minimum_versions)


def test_vulnerable_pin_is_flagged_and_cli_fails(tmp_path, capsys):
    path = _constraints(tmp_path, "# pins\npydicom==3.0.1\ntorch==2.5.1  # old\nnumpy==2.4.6\n")
    found = check_versions(parse_constraints(path), load_advisories())
    ids = {(v.package, v.advisory_id) for v in found if v.kind == "advisory"}
    assert ("pydicom", "CVE-2026-32711") in ids
    assert ("torch", "CVE-2025-32434") in ids and ("torch", "CVE-2026-24747") in ids
    assert not [v for v in found if v.package == "numpy"]
    assert all(v.blocking for v in found)

    assert main(["check", "--constraints", str(path), "--no-installed"]) == 1
    out = capsys.readouterr().out
    assert "VIOLATION pydicom==3.0.1" in out and "CVE-2026-32711" in out and "upgrade to 2.4.5 or 3.0.2" in out


def test_cli_module_exit_status(tmp_path):
    bad = _constraints(tmp_path, "streamlit==1.36.0\n")
    cmd = [sys.executable, "-m", "compliance.supply_chain", "check", "--no-installed", "--constraints"]
    failed = subprocess.run(cmd + [str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert failed.returncode == 1 and "CVE-2024-42474" in failed.stdout
    passed = subprocess.run(cmd + [str(DEFAULT_CONSTRAINTS)], cwd=ROOT, capture_output=True, text=True)
    assert passed.returncode == 0, passed.stdout + passed.stderr


def test_minimum_versions_are_enforced(tmp_path):
    db = load_advisories()
    assert {"pydicom", "torch", "streamlit", "mlflow"} <= set(db.minimum_versions)
    # Below the minimum gives a `minimum` violation (besides any advisory); exactly the minimum passes.
    path = _constraints(tmp_path, f"mlflow==3.9.9\npydicom=={db.minimum_versions['pydicom']}\n")
    found = check_versions(parse_constraints(path), db)
    kinds = {(v.package, v.kind) for v in found}
    assert ("mlflow", "minimum") in kinds
    assert not [v for v in found if v.package == "pydicom"]  # exactly the minimum passes
    assert main(["check", "--constraints", str(path), "--no-installed"]) == 1


def test_minimum_alone_is_enforced_without_an_advisory(tmp_path):
    advisories = tmp_path / "adv.yaml"
    advisories.write_text(
        "minimum_versions: {numpy: '2.5.0'}\n"
        "advisories:\n  - {id: CVE-2099-0001, package: other, affected: '<1', fixed: ['1'], summary: s}\n",
        encoding="utf-8",
    )
    found = check_versions(parse_constraints(_constraints(tmp_path, "NumPy==2.4.6\n")), load_advisories(advisories))
    assert [(v.package, v.kind) for v in found] == [("numpy", "minimum")]


def test_installed_versions_cover_unpinned_packages(tmp_path):
    db = load_advisories()
    pins = parse_constraints(_constraints(tmp_path, "numpy==2.4.6\n"))
    found = check_versions(pins, db, installed={"pillow": "10.1.0", "numpy": "1.0"})
    assert {(v.package, v.advisory_id, v.source) for v in found if v.kind == "advisory"} == {
        ("pillow", "CVE-2023-50447", "installed"), ("pillow", "CVE-2024-28219", "installed")}
    # A pinned package is judged by its pin, not by what happens to be installed.
    assert not [v for v in found if v.package == "numpy"]


def test_unpinned_line_is_a_violation(tmp_path):
    pins = parse_constraints(_constraints(tmp_path, "torch>=2.6\n-e .\n\n"))
    assert [(p.name, p.version) for p in pins] == [("torch", None)]
    assert [v.kind for v in check_versions(pins, load_advisories())] == ["not_pinned"]


def test_accepted_advisory_is_a_note_not_a_violation(tmp_path):
    found = check_versions(parse_constraints(_constraints(tmp_path, "mlflow==3.17.2\n")), load_advisories())
    assert [(v.advisory_id, v.blocking) for v in found] == [("CVE-2024-37052", False)]


def test_parse_ranges():
    ranges = parse_affected([">=2.0.0rc1,<2.4.5", ">=3.0.0,<3.0.2"])
    assert [is_affected(v, ranges) for v in ("1.4.2", "2.0.0rc1", "2.4.4", "2.4.5", "3.0.0", "3.0.1", "3.0.2")] == [
        False, True, True, False, True, True, False]
    assert parse_affected(">=2,<2.4.5 || >=3,<3.0.2") == parse_affected([">=2,<2.4.5", ">=3,<3.0.2"])
    assert is_affected("2.5.1+cpu", parse_affected("<2.6.0"))  # local versions count
    assert is_affected("5.0.0rc2", parse_affected("<5.0.0rc3"))  # pre-releases count
    assert not is_affected(Version("5.0.0"), parse_affected("<5.0.0rc3"))
    for bad in ("", "<<1", ["<1", ""], "1.0"):
        with pytest.raises(SupplyChainError):
            parse_affected(bad)


def test_every_advisory_is_well_formed():
    db = load_advisories()
    for adv in db.advisories:
        assert adv.summary and adv.affected
        assert adv.fixed or adv.accepted, f"{adv.id}: no fix and no acceptance reason"
        for fixed in adv.fixed:
            assert not adv.affects(fixed)
    covered = {a.package for a in db.advisories}
    assert {"pydicom", "torch", "streamlit", "mlflow", "transformers", "pillow"} <= covered


@pytest.mark.parametrize("entry, words", [
    ("{id: CVE-1, package: x, affected: '<1', fixed: ['1'], summary: s}", "id must be"),
    ("{id: CVE-2024-1234, package: x, affected: '<2', fixed: ['1.5'], summary: s}", "inside the affected range"),
    ("{id: CVE-2024-1234, package: x, fixed: ['1'], summary: s}", "affected is required"),
    ("{id: CVE-2024-1234, package: x, affected: '<1', fixed: ['1'], summary: s, accepted: why}", "upgrade instead"),
    ("{id: CVE-2024-1234, package: x, affected: '<1', fixed: ['1'], summary: s, severity: high}", "unknown keys"),
    ("{id: CVE-2024-1234, package: x, affected: '<1', fixed: ['1']}", "summary is required"),
])
def test_malformed_advisories_are_refused_naming_the_entry(tmp_path, entry, words):
    path = tmp_path / "adv.yaml"
    path.write_text(f"advisories:\n  - {entry}\n", encoding="utf-8")
    with pytest.raises(SupplyChainError, match=words):
        load_advisories(path)


def test_bad_constraints_files(tmp_path):
    with pytest.raises(SupplyChainError, match="already pinned on line 1"):
        parse_constraints(_constraints(tmp_path, "torch==2.13.0\nTorch==2.12.0\n"))
    with pytest.raises(SupplyChainError, match="not a PEP 440 version"):
        parse_constraints(_constraints(tmp_path, "torch==two\n"))
    with pytest.raises(SupplyChainError, match="cannot read"):
        parse_constraints(tmp_path / "absent.txt")
    assert main(["check", "--constraints", str(tmp_path / "absent.txt")]) == 2


def test_soup_lists_every_pin_with_licence_and_advisory_state(tmp_path, capsys):
    pins = parse_constraints(DEFAULT_CONSTRAINTS)
    text = soup_markdown(pins, load_advisories())
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| Package")]
    assert len(rows) == len(pins)
    pydicom_row = next(r for r in rows if r.startswith("| pydicom |"))
    assert "3.0.2" in pydicom_row and "MIT" in pydicom_row and "CVE-2026-32711: not affected" in pydicom_row
    assert soup_markdown(pins, load_advisories()) == text  # deterministic

    # Metadata can be supplied (not installed / odd licence fields) and the CLI prints the same table.
    fake = {"torch": {"Version": "2.5.1", "Summary": "a|b", "License": "LICENSE"}}
    old = soup_markdown(parse_constraints(_constraints(tmp_path, "torch==2.5.1\npillow==13.0.0\n")),
                        load_advisories(), metadata=fake)
    assert "CVE-2025-32434: AFFECTED" in old and "a\\|b" in old and "| pillow | 13.0.0 | not installed |" in old
    assert main(["soup"]) == 0
    assert capsys.readouterr().out.count("\n| ") == len(pins) + 1
