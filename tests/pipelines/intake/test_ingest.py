"""`medvlm ingest`: studies.jsonl, quarantine with reasons, idempotent re-runs, duplicates, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dicom_io.study import Study
from pipelines.intake.ingest import IngestError, IngestSummary, run_ingest


@pytest.fixture
def src(tmp_path, pydicom_data_file) -> Path:
    folder = tmp_path / "src"
    (folder / "chest").mkdir(parents=True)
    (folder / "other" / "deep").mkdir(parents=True)
    for name in ("RG1_UNCR.dcm", "RG1_J2KI.dcm"):
        shutil.copy(pydicom_data_file(name), folder / "chest" / name)
    shutil.copy(pydicom_data_file("RG1_UNCR.dcm"), folder / "other" / "copy_of_rg1.dcm")  # duplicate SOP UID
    shutil.copy(pydicom_data_file("RG3_UNCR.dcm"), folder / "other" / "tibia.dcm")
    shutil.copy(pydicom_data_file("CT_small.dcm"), folder / "other" / "deep" / "ct.dcm")
    data = pydicom_data_file("RG1_UNCR.dcm").read_bytes()
    (folder / "other" / "truncated.dcm").write_bytes(data[:-5000])  # chest header, pixel data cut short
    (folder / "other" / "notes.txt").write_text("not an image")
    (folder / ".hidden").write_text("skipped")
    return folder


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_ingest_writes_studies_and_quarantine(src, tmp_path):
    out = tmp_path / "out"
    summary = run_ingest(src, out, progress=False)
    assert isinstance(summary, IngestSummary)
    counts = summary.as_dict()
    assert counts == {"files_seen": 7, "images_accepted": 2, "studies": 1, "quarantined": 5,
                      "by_reason": {"bad_pixel_data": 1, "duplicate": 1, "not_chest_radiograph": 2, "unreadable": 1}}
    lines = (out / "studies.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    images = record["series"][0]["images"]
    assert {img["relative_path"] for img in images} == {"chest/RG1_UNCR.dcm", "chest/RG1_J2KI.dcm"}
    for img in images:
        assert img["view"] == "PA" and img["modality"] == "CR" and img["shape"] == [1955, 1841]
        assert Path(img["source_path"]).is_absolute() and img["sop_uid"] and img["study_uid"]
        assert img["meta"]["window"] == "window"
    assert Study.from_dict(record).study_uid == record["study_uid"]
    reasons = {}
    for path in (out / "quarantine").glob("*.json"):
        rec = json.loads(path.read_text())
        assert set(rec) >= {"code", "error", "detail", "hint", "path", "relative_path"}
        assert (out / "quarantine" / rec["stored_file"]).read_bytes() == (src / rec["relative_path"]).read_bytes()
        reasons[rec["relative_path"]] = rec["code"]
    assert reasons == {"other/copy_of_rg1.dcm": "duplicate", "other/tibia.dcm": "not_chest_radiograph",
                       "other/deep/ct.dcm": "not_chest_radiograph", "other/truncated.dcm": "bad_pixel_data",
                       "other/notes.txt": "unreadable"}


def test_ingest_twice_gives_identical_output_and_removes_stale_records(src, tmp_path):
    out = tmp_path / "out"
    first = run_ingest(src, out, progress=False)
    before = _snapshot(out)
    second = run_ingest(src, out, progress=False)
    assert first == second and _snapshot(out) == before
    (src / "other" / "notes.txt").unlink()  # a fixed input: its quarantine entry goes away
    third = run_ingest(src, out, progress=False)
    assert third.quarantined == first.quarantined - 1
    assert len(list((out / "quarantine").glob("*.json"))) == third.quarantined
    assert len(list((out / "quarantine" / "files").iterdir())) == third.quarantined


def test_unexpected_errors_are_quarantined_with_type_only(src, tmp_path, monkeypatch):
    import pipelines.intake.ingest as ingest

    real = ingest.load_chest_image

    def flaky(path, **kwargs):
        if Path(path).name == "RG1_J2KI.dcm":
            raise RuntimeError("secret patient name in message")
        return real(path, **kwargs)

    monkeypatch.setattr(ingest, "load_chest_image", flaky)
    summary = run_ingest(src, tmp_path / "out", progress=False)
    assert summary.by_reason["internal_error"] == 1
    texts = [p.read_text() for p in (tmp_path / "out" / "quarantine").glob("*.json")]
    internal = [json.loads(t) for t in texts if "internal_error" in t]
    assert internal[0]["error"] == "RuntimeError"
    assert not any("secret" in t for t in texts)


def test_shared_files_one_kept_one_duplicate(shared_data, tmp_path):
    # the two shared RSNA files carry the same SOP Instance UID (see FACTS.md)
    summary = run_ingest(shared_data / "dicom", tmp_path / "out", progress=False)
    assert summary.images_accepted == 1 and summary.by_reason == {"duplicate": 1}


def test_png_is_ingested_without_dicom_metadata(shared_data, tmp_path):
    src = tmp_path / "png"
    src.mkdir()
    shutil.copy(shared_data / "images" / "00000001_000.png", src / "a.png")
    summary = run_ingest(src, tmp_path / "out", progress=False)
    assert summary.images_accepted == 1
    meta = json.loads((tmp_path / "out" / "studies.jsonl").read_text())["series"][0]["images"][0]["meta"]
    assert meta["has_dicom_metadata"] is False


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        run_ingest(tmp_path / "missing", tmp_path / "out", progress=False)
    with pytest.raises(IngestError, match="window"):
        run_ingest(tmp_path, tmp_path / "out", window="nope", progress=False)


def test_cli_ingest(src, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(app, ["ingest", str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "images_accepted" in result.output and (tmp_path / "out" / "studies.jsonl").is_file()
    bad = CliRunner().invoke(app, ["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_output_folder_inside_source_is_not_ingested(src):
    out = src / "ingest_out"
    first = run_ingest(src, out, progress=False)
    second = run_ingest(src, out, progress=False)  # quarantine copies under out/ must not be re-read
    assert first == second and second.files_seen == 7


def test_truncated_file_is_quarantined_as_truncated_not_as_wrong_modality(tmp_path, pydicom_data_file):
    """A file cut inside its header must say so, not blame the gate."""
    src = tmp_path / "src"
    src.mkdir()
    whole = pydicom_data_file("RG1_UNCR.dcm").read_bytes()
    (src / "cut.dcm").write_bytes(whole[:600])
    from pipelines.intake.ingest import run_ingest

    summary = run_ingest(src, tmp_path / "out", progress=False)
    assert summary.as_dict()["quarantined"] == 1
    import json

    (record_path,) = (tmp_path / "out" / "quarantine").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["code"] in {"bad_pixel_data", "unreadable"}, record
