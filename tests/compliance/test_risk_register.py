"""The risk register: every hazard has a mitigation, and every mitigation an existing test."""

from __future__ import annotations

import pytest

from compliance.risk import (
    DEFAULT_REGISTER,
    SEVERITIES,
    RiskRegisterError,
    load_register,
    main,
    node_problem,
    register_markdown,
    validate_register,
)


def test_every_hazard_has_a_mitigation_and_an_existing_test():
    hazards = load_register(DEFAULT_REGISTER)
    assert len(hazards) >= 10
    for hazard in hazards:
        assert hazard.mitigations and all(m.tests for m in hazard.mitigations), hazard.id
        assert hazard.severity in SEVERITIES and hazard.residual
    assert validate_register(hazards) == []


def test_the_register_covers_the_safety_topics_of_the_design():
    text = " ".join(f"{h.hazard} {h.cause}".lower() for h in load_register())
    for topic in ("phi", "de-identification", "left and right", "unreviewed", "signed", "pickle",
                  "vulnerab", "malformed", "dashboard"):
        assert topic in text, f"no hazard about {topic}"


def test_missing_tests_are_named(tmp_path):
    tests_dir = tmp_path / "tests" / "pkg"
    tests_dir.mkdir(parents=True)
    (tests_dir / "test_x.py").write_text("class TestA:\n    def test_b(self):\n        pass\n\n"
                                         "def test_real():\n    pass\n", encoding="utf-8")
    assert node_problem("tests/pkg/test_x.py::test_real", tmp_path) is None
    assert node_problem("tests/pkg/test_x.py::test_real[sqlite]", tmp_path) is None
    assert node_problem("tests/pkg/test_x.py::TestA::test_b", tmp_path) is None
    assert "function test_gone" in node_problem("tests/pkg/test_x.py::test_gone", tmp_path)
    assert "test_rea is not defined" in node_problem("tests/pkg/test_x.py::test_rea", tmp_path)  # no prefix match
    assert "class TestZ" in node_problem("tests/pkg/test_x.py::TestZ::test_b", tmp_path)
    assert "does not exist" in node_problem("tests/pkg/test_y.py::test_real", tmp_path)
    assert "not a pytest node id" in node_problem("pkg/test_x.py", tmp_path)


def _write(tmp_path, body: str):
    path = tmp_path / "register.yaml"
    path.write_text(body, encoding="utf-8")
    return path


GOOD = """hazards:
  - id: H-01
    hazard: h
    cause: c
    harm: x
    severity: minor
    probability: remote
    residual: r
    mitigations:
      - control: k
        tests: [tests/test_layout.py::test_gone_for_good]
"""


def test_validation_reports_a_renamed_test_and_cli_fails(tmp_path, capsys):
    path = _write(tmp_path, GOOD)
    problems = validate_register(load_register(path))
    assert problems == ["H-01: tests/test_layout.py::test_gone_for_good: function test_gone_for_good is not "
                        "defined in tests/test_layout.py"]
    assert main(["check", "--register", str(path)]) == 1
    assert "test_gone_for_good" in capsys.readouterr().out


@pytest.mark.parametrize("old, new, words", [
    ("severity: minor", "severity: bad", "severity must be one of"),
    ("id: H-01", "id: 1", "id must look like"),
    ("        tests: [tests/test_layout.py::test_gone_for_good]", "        tests: []", "at least one pytest node id"),
    ("    cause: c\n", "", "'cause' is required"),
])
def test_malformed_registers_are_refused(tmp_path, old, new, words):
    with pytest.raises(RiskRegisterError, match=words):
        load_register(_write(tmp_path, GOOD.replace(old, new)))


def test_hazard_without_mitigation_is_refused(tmp_path):
    body = GOOD.split("    mitigations:")[0] + "    mitigations: []\n"
    with pytest.raises(RiskRegisterError, match="at least one mitigation"):
        load_register(_write(tmp_path, body))


def test_markdown_lists_every_hazard_and_test():
    hazards = load_register()
    text = register_markdown(hazards)
    assert all(f"| {h.id} |" in text for h in hazards)
    assert "`tests/compliance/test_audit.py::test_edited_event_detected`" in text
