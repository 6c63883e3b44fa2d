"""`medvlm ingest` on a folder holding the worst entries a file system offers: the run finishes, exit 0,
the good images are ingested and every bad entry has a quarantine record with its reason."""

from __future__ import annotations

import json
import shutil

from _bad_entries import BadEntries


def test_cli_ingest_records_every_bad_entry_and_keeps_going(tmp_path, pydicom_data_file):
    from typer.testing import CliRunner

    from pipelines.cli import app

    src = tmp_path / "src"
    (src / "chest").mkdir(parents=True)
    shutil.copy(pydicom_data_file("RG1_UNCR.dcm"), src / "chest" / "good.dcm")
    bad = BadEntries(src, tmp_path / "outside.dcm")
    try:
        result = CliRunner().invoke(app, ["ingest", str(src), "--out", str(tmp_path / "out")])
    finally:
        bad.close()
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    studies = (tmp_path / "out" / "studies.jsonl").read_text().splitlines()
    assert len(studies) == 1  # the good image is ingested
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "quarantine").glob("*.json")]
    assert {r["relative_path"]: r["code"] for r in records} == bad.expected
    for rec in records:
        assert rec["detail"] and rec["hint"] and "stored_file" not in rec  # never opened, never copied
    assert not any((tmp_path / "out" / "quarantine" / "files").iterdir())


def test_scan_folder_never_opens_or_leaves_the_folder(tmp_path):
    from dicom_io.scan import printable_name, scan_folder

    src = tmp_path / "src"
    bad = BadEntries(src, tmp_path / "outside.dcm")
    (src / "ok dir").mkdir()
    (src / "ok dir" / "odd $(name) é\n.dcm").write_bytes(b"odd but valid UTF-8")
    (src / "inside_link.dcm").symlink_to(src / "ok dir" / "odd $(name) é\n.dcm")
    try:
        files, skipped = scan_folder(src)  # would block forever if it opened the FIFO
    finally:
        bad.close()
    assert sorted(p.relative_to(src.resolve()).as_posix() for p in files) == [
        "inside_link.dcm", "ok dir/odd $(name) é\n.dcm"]
    assert {e.name: e.code for e in skipped} == bad.expected
    assert printable_name("odd é\n") == "odd é\\n"
