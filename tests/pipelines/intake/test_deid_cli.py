"""`medvlm deid SRC OUT`: the job over a folder, its output layout and reports, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
import yaml
from typer.testing import CliRunner

from compliance.deid_recipe import DEFAULT_RECIPE
from dicom_io.deid import KEY_ENV, remap_uid
from pipelines.cli import app
from pipelines.intake.deid import FAILED_NAME, MANIFEST_NAME, PIXEL_REVIEW_NAME, run_deid

KEY_TEXT = "cli-test-key-0123456789abcdef-not-secret"
PHI = (b"SIMPSON", b"HIBBARD", b"00007041776", b"SPRINGFIELD", b"Evergreen", b"999887722")


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "deid.key"
    path.write_text(KEY_TEXT + "\n", encoding="utf-8")
    return path


@pytest.fixture
def src(tmp_path, ctbrain) -> Path:
    """A nested folder with one real DICOM file and one junk file."""
    root = tmp_path / "in"
    (root / "patient_SIMPSON" / "deep").mkdir(parents=True)
    shutil.copy(ctbrain, root / "patient_SIMPSON" / "deep" / "ct.dcm")
    (root / "notes.txt").write_text("not DICOM", encoding="utf-8")
    return root


def _outputs(out: Path) -> list[Path]:
    return sorted(out.rglob("*.dcm"))


def test_run_deid_folder(src, tmp_path, key_file, ctbrain):
    out = tmp_path / "out"
    summary = run_deid(src, out, key_file=key_file, progress=False)
    assert summary.as_dict() == {"files_in": 2, "files_written": 1, "failed": 1, "needs_pixel_review": 1,
                                 "recipe_version": "2.0.0"}

    (written,) = _outputs(out)
    original = pydicom.dcmread(ctbrain)
    ds = pydicom.dcmread(written)
    key = KEY_TEXT.encode()
    # named by the NEW UIDs only; no PHI and no original UID in any path
    assert written.relative_to(out) == Path(remap_uid(original.StudyInstanceUID, key)) / (
        remap_uid(original.SOPInstanceUID, key) + ".dcm")
    assert written.parent.name == ds.StudyInstanceUID and written.stem == ds.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert ds.PixelData == original.PixelData
    data = written.read_bytes()
    assert not [p for p in PHI if p in data]
    assert str(original.SOPInstanceUID).encode() not in data

    failed = [json.loads(line) for line in (out / FAILED_NAME).read_text().splitlines()]
    assert [(f["code"], f["path"]) for f in failed] == [("unreadable", "notes.txt")]
    review = [json.loads(line) for line in (out / PIXEL_REVIEW_NAME).read_text().splitlines()]
    assert review == [{"output": str(written.relative_to(out)), "flags": ["burned_in_annotation_missing"]}]
    # the source folder name carries a patient name: it must not reach the shareable outputs
    for name in (PIXEL_REVIEW_NAME, MANIFEST_NAME):
        assert b"SIMPSON" not in (out / name).read_bytes()
    assert summary.needs_pixel_review[0]["flags"] == ["burned_in_annotation_missing"]

    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["recipe_version"] == "2.0.0" and manifest["recipe_name"] == "medvlm-ps3.15-basic"
    assert len(manifest["recipe_sha256"]) == 64
    assert manifest["outputs"] == [str(written.relative_to(out))]
    assert ds.DeidentificationMethod == manifest["deidentification_method"] == "medvlm-ps3.15-basic 2.0.0"


def test_rerun_gives_identical_uids_and_bytes(src, tmp_path, key_file):
    run_deid(src, tmp_path / "a", key_file=key_file, progress=False)
    run_deid(src, tmp_path / "b", key_file=key_file, progress=False)
    a, b = _outputs(tmp_path / "a"), _outputs(tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    assert a[0].read_bytes() == b[0].read_bytes()
    # and running again into the same folder overwrites instead of failing
    summary = run_deid(src, tmp_path / "a", key_file=key_file, progress=False)
    assert summary.files_written == 1 and len(_outputs(tmp_path / "a")) == 1


def test_custom_recipe_version_is_recorded_in_every_output(src, tmp_path, key_file):
    data = yaml.safe_load(DEFAULT_RECIPE.read_text(encoding="utf-8"))
    data["version"] = "2.1.0"
    recipe = tmp_path / "recipe_v2.yaml"
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = tmp_path / "out"
    summary = run_deid(src, out, recipe=recipe, key_file=key_file, progress=False)
    assert summary.recipe_version == "2.1.0"
    assert json.loads((out / MANIFEST_NAME).read_text())["recipe_version"] == "2.1.0"
    for path in _outputs(out):
        assert pydicom.dcmread(path).DeidentificationMethod == "medvlm-ps3.15-basic 2.1.0"


def test_duplicate_instance_is_reported_not_overwritten(tmp_path, ctbrain, key_file):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(ctbrain, src / "a.dcm")
    shutil.copy(ctbrain, src / "b.dcm")
    summary = run_deid(src, tmp_path / "out", key_file=key_file, progress=False)
    assert summary.files_written == 1
    assert [f["code"] for f in summary.failed] == ["duplicate_sop_instance_uid"]


def test_single_file_and_output_inside_source(tmp_path, ctbrain, key_file):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(ctbrain, src / "ct.dcm")
    assert run_deid(src / "ct.dcm", tmp_path / "o1", key_file=key_file, progress=False).files_written == 1
    inner = src / "deid"
    run_deid(src, inner, key_file=key_file, progress=False)
    summary = run_deid(src, inner, key_file=key_file, progress=False)  # must not re-read its own outputs
    assert summary.files_in == 1 and summary.failed == ()


def test_missing_source_and_missing_key(tmp_path, src, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(FileNotFoundError):
        run_deid(tmp_path / "nope", tmp_path / "out", progress=False)
    from dicom_io.errors import DeidentificationError

    with pytest.raises(DeidentificationError, match=KEY_ENV):
        run_deid(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing written before the key check


def test_cli_deid(src, tmp_path, key_file):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["deid", str(src), str(out), "--key-file", str(key_file)])
    assert result.exit_code == 0, result.output
    assert "files_written" in result.output and "recipe_version" in result.output and "2.0.0" in result.output
    assert len(_outputs(out)) == 1
    assert (out / FAILED_NAME).is_file() and (out / PIXEL_REVIEW_NAME).is_file() and (out / MANIFEST_NAME).is_file()


def test_cli_deid_key_from_env(src, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY_TEXT)
    result = CliRunner().invoke(app, ["deid", str(src), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert len(_outputs(tmp_path / "out")) == 1


def test_cli_deid_without_key_fails_with_instructions(src, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    result = CliRunner().invoke(app, ["deid", str(src), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "DeidentificationError" in result.output and KEY_ENV in result.output


def test_cli_deid_bad_recipe_names_the_tag(src, tmp_path, key_file):
    data = yaml.safe_load(DEFAULT_RECIPE.read_text(encoding="utf-8"))
    data["attributes"]["00100020"] = ["REMOVE", "PatientID"]
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["deid", str(src), str(tmp_path / "out"), "--key-file", str(key_file),
                                      "--recipe", str(recipe)])
    assert result.exit_code == 2
    assert "(0010,0020)" in result.output and "RecipeError" in result.output
