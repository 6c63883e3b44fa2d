"""Tests for `medvlm label` and `pipelines.evaluation.label.run_label` (reports written for these tests)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.evaluation.label import run_label

REPORTS = [
    {
        "uid": "a1",
        "findings": "The heart is enlarged. Small left pleural effusion.",
        "impression": "Cardiomegaly.",
    },
    {
        "uid": "b2",
        "findings": "Heart size normal. Lungs are clear. No pneumothorax.",
        "impression": "Normal chest.",
    },
    {"findings": "", "impression": "Possible right lower lobe pneumonia."},
]


def as_jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_run_label_format():
    out = list(run_label(as_jsonl(REPORTS).splitlines()))
    assert [o["uid"] for o in out] == ["a1", "b2", None]
    assert out[0]["labels"] == {"Cardiomegaly": "positive", "Pleural Effusion": "positive"}
    assert out[0]["laterality"] == {"Pleural Effusion": "left"}
    assert out[1]["labels"]["No Finding"] == "positive"
    assert out[1]["labels"]["Pneumothorax"] == "negative"
    assert "Cardiomegaly" in out[1]["labels"] and "Fracture" not in out[1]["labels"]
    assert out[2]["labels"] == {"Pneumonia": "uncertain"}
    assert all(isinstance(v, str) for o in out for v in o["labels"].values())


def test_run_label_skips_blank_lines():
    assert len(list(run_label(["", json.dumps(REPORTS[0]), "   "]))) == 1


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", "line 2: not valid JSON"),
        ('{"uid": 1}', "line 2: needs"),
        ("[1, 2]", "line 2: expected"),
        ('{"findings": 3}', "line 2: field"),
    ],
)
def test_run_label_bad_line_names_line_number(line, match):
    with pytest.raises(ValueError, match=match):
        list(run_label([json.dumps(REPORTS[0]), line]))


def test_cli_label_file(tmp_path):
    path = tmp_path / "reports.jsonl"
    path.write_text(as_jsonl(REPORTS), encoding="utf-8")
    result = CliRunner().invoke(app, ["label", str(path)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(lines) == 3
    assert lines[0] == {
        "uid": "a1",
        "labels": {"Cardiomegaly": "positive", "Pleural Effusion": "positive"},
        "laterality": {"Pleural Effusion": "left"},
    }


def test_cli_label_stdin():
    result = CliRunner().invoke(app, ["label", "-"], input=as_jsonl(REPORTS[1:2]))
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert line["uid"] == "b2" and line["labels"]["No Finding"] == "positive"


def test_cli_label_bad_line_is_clean_error():
    result = CliRunner().invoke(app, ["label"], input=as_jsonl(REPORTS[:1]) + "oops\n")
    assert result.exit_code == 2
    assert "line 2" in result.output
    assert "Traceback" not in result.output
