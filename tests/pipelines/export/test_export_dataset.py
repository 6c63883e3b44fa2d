"""Export of signed reports + de-identified images as a training folder (pipelines.export.dataset)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest

from compliance.audit import read_events, verify_chain
from compliance.deid_recipe import load_recipe
from dicom_io.deid import remap_uid
from dicom_io.errors import DeidentificationError
from medvlm import labeler
from pipelines.export.dataset import (
    MANIFEST_FILE,
    REDACTED,
    REPORTS_FILE,
    DatasetExportError,
    export_approved_pairs,
    redact,
    source_views,
    split_for,
)
from pipelines.store import jobs, open_store, reviews
from pipelines.store.studies import add_study
from pipelines.training.datasets import ImageCache, load_records

KEY = b"0123456789abcdef0123456789abcdef"
PHI = {
    "PatientName": "ZZFAMILYPHI^ZZGIVENPHI",
    "PatientID": "MRN-5550123",
    "AccessionNumber": "ACC7788991",
    "InstitutionName": "Saint Elsewherephi General",
    "ReferringPhysicianName": "HOUSEPHI^GREGORYPHI",
    "PatientBirthDate": "19610314",
}
PHI_STRINGS = ["ZZFAMILYPHI", "ZZGIVENPHI", "MRN-5550123", "ACC7788991", "Elsewherephi", "HOUSEPHI",
               "GREGORYPHI", "19610314"]
SIGNED_NOTE = "Findings discussed with Dr Housephi by phone."


def _add_phi(phantom_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (phantom_dir / REPORTS_FILE).read_text().splitlines()]
    for rec in records:
        for view in rec["views"]:
            path = phantom_dir / view["path"]
            ds = pydicom.dcmread(path)
            for keyword, value in PHI.items():
                setattr(ds, keyword, value)
            ds.private_block(0x0009, "ACME PHI", create=True).add_new(0x10, "LO", "ZZFAMILYPHI private")
            ds.save_as(path, enforce_file_format=True)
    return records


def _draft(store, rec: dict, findings: str, impression: str) -> int:
    files = [str(Path(rec["_root"], v["path"]).resolve()) for v in rec["views"]]
    meta = {"files": files, "views": [v["view"] for v in rec["views"]], "inputs": files[:1], "rejected": []}
    add_study(store, rec["study_uid"], source="test-intake", metadata=meta)
    jobs.enqueue(store, rec["study_uid"], "medvlm/test", "p" * 64, source="test-intake")
    job = jobs.claim(store, "worker-1", 60)
    assert job is not None and job.study_uid == rec["study_uid"]
    jobs.complete(store, job.id, "worker-1", jobs.DraftPayload(findings=findings, impression=impression))
    return reviews.create_version_from_draft(store, job.id).id


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """Three phantom studies with PHI in their headers: 0 signed, 1 unsigned, 2 signed then edited."""
    from pipelines.phantoms import PhantomConfig, generate_phantoms

    root = tmp_path_factory.mktemp("export")
    phantom_dir = root / "phantoms"
    generate_phantoms(phantom_dir, n=3, seed=5, progress=False, config=PhantomConfig(size=64))
    records = _add_phi(phantom_dir)
    for rec in records:
        rec["_root"] = str(phantom_dir)
    store = open_store(f"sqlite:///{root / 'store.db'}")
    v0 = _draft(store, records[0], f"{records[0]['findings']} {SIGNED_NOTE}", records[0]["impression"])
    reviews.sign_version(store, v0, signer="rad", role="radiologist")
    _draft(store, records[1], "UNSIGNED DRAFT TEXT.", "Nothing.")
    v2 = _draft(store, records[2], records[2]["findings"], records[2]["impression"])
    reviews.sign_version(store, v2, signer="rad", role="radiologist")
    reviews.edit_version(store, v2, findings="LATER UNSIGNED EDIT.", impression="Edited.", author="res")
    key_file = root / "deid.key"
    key_file.write_bytes(KEY + b"\n")
    out = root / "export"
    summary = export_approved_pairs(store, out, key_file=key_file)
    yield {"store": store, "records": records, "out": out, "summary": summary, "key_file": key_file, "root": root}
    store.close()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_only_signed_studies_exported_with_signed_text(seeded):
    records, summary = seeded["records"], seeded["summary"]
    assert summary.studies == 2 and summary.images == 4 and not summary.skipped
    exported = {r["study_uid"]: r for r in map(json.loads, (seeded["out"] / REPORTS_FILE).read_text().splitlines())}
    new = [remap_uid(r["study_uid"], KEY) for r in records]
    assert set(exported) == {new[0], new[2]}  # study 1 has no signed version
    # Study 2: the signed version 1, not the later unsigned edit.
    assert exported[new[2]]["findings"] == records[2]["findings"]
    assert exported[new[2]]["report_version"] == 1
    assert "LATER UNSIGNED EDIT" not in json.dumps(list(exported.values()))
    # The identifier quoted in the signed report is redacted, the rest kept.
    assert exported[new[0]]["findings"] == f"{records[0]['findings']} Findings discussed with Dr {REDACTED} by phone."
    assert summary.redacted_reports == 1
    for rec in exported.values():
        assert rec["labels"] == labeler.labels_as_strings(labeler.label_record(rec))
        assert rec["split"] == split_for(rec["study_uid"])
        assert rec["indication"] == ""


def test_no_phi_in_any_output_byte(seeded):
    forbidden = [s.lower().encode() for s in PHI_STRINGS]
    for rec in seeded["records"]:
        forbidden.append(rec["study_uid"].encode())
        forbidden += [v["sop_uid"].encode() for v in rec["views"]]
        forbidden += [v["series_uid"].encode() for v in rec["views"]]
        forbidden.append(rec["study_id"].encode())
    source = b"".join(_snapshot(seeded["root"] / "phantoms").values()).lower()
    assert all(f.lower() in source for f in forbidden)  # the check below can fail: the sources hold it all
    for rel, data in _snapshot(seeded["out"]).items():
        low = data.lower()
        leaks = [f.decode() for f in forbidden if f.lower() in low]
        assert not leaks, f"{rel} contains {leaks}"


def test_recipe_version_recorded_and_images_deidentified(seeded):
    out, recipe = seeded["out"], load_recipe()
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["recipe_version"] == recipe.version and manifest["recipe_sha256"] == recipe.sha256
    assert manifest["studies"] == 2 and len(manifest["files"]) == 4
    for line in (out / REPORTS_FILE).read_text().splitlines():
        rec = json.loads(line)
        assert rec["deid_recipe_version"] == recipe.version
        for view in rec["views"]:
            ds = pydicom.dcmread(out / view["path"])
            assert ds.PatientIdentityRemoved == "YES"
            assert str(ds.StudyInstanceUID) == rec["study_uid"]
            assert str(ds.DeidentificationMethod) == recipe.method
            assert "PatientName" not in ds or not str(ds.PatientName)


def test_datasets_loader_reads_the_export(seeded):
    records = load_records(seeded["out"])
    assert len(records) == 2
    for rec in records:
        assert len(rec.view_paths) == 2 and all(p.is_file() for p in rec.view_paths)
        assert rec.view_paths[1].parent.name == rec.study_uid  # files live under the new study UID
        assert rec.report.startswith("FINDINGS:")
    image = ImageCache(size=32).get(records[0].view_paths[0])
    assert image.shape == (32, 32) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0


def test_reexport_is_identical_and_audited(seeded):
    store, out = seeded["store"], seeded["out"]
    before = _snapshot(out)
    again = export_approved_pairs(store, out, key_file=seeded["key_file"])
    assert _snapshot(out) == before
    assert again.dataset_sha256 == seeded["summary"].dataset_sha256
    with store.transaction() as session:
        events = [e for e in read_events(session, actor="test") if e.action == "dataset.export"]
        assert verify_chain(session).ok
    assert len(events) >= 2
    assert events[-1].object_id == again.dataset_sha256
    assert events[-1].details["studies"] == 2 and events[-1].details["recipe_version"] == load_recipe().version
    text = json.dumps([e.details for e in events])
    assert not any(r["study_uid"] in text for r in seeded["records"])


def test_since_filters_and_stale_files_are_removed(seeded):
    store, root = seeded["store"], seeded["root"]
    out = root / "since"
    first = export_approved_pairs(store, out, key_file=seeded["key_file"])
    assert first.studies == 2
    later = export_approved_pairs(store, out, key_file=seeded["key_file"],
                                  since=datetime.now(UTC) + timedelta(days=1))
    assert later.studies == 0 and later.removed_stale == 4
    assert [p.name for p in out.iterdir()] and not list(out.rglob("*.dcm"))
    assert (out / REPORTS_FILE).read_text() == ""


def test_refusals(seeded, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDVLM_DEID_KEY", raising=False)
    with pytest.raises(DeidentificationError):
        export_approved_pairs(seeded["store"], tmp_path / "nokey")
    assert not (tmp_path / "nokey").exists()  # the key is checked before anything is written
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(DatasetExportError, match="not empty"):
        export_approved_pairs(seeded["store"], tmp_path / "busy", key_file=seeded["key_file"])


def test_helpers():
    assert redact("Seen by DR SMITH; smithson ok.", {"Smith"}) == (f"Seen by DR {REDACTED}; smithson ok.", 1)
    assert redact("uid 1.2.3.4 and 1.2.3.45", {"1.2.3.4"}) == (f"uid {REDACTED} and 1.2.3.45", 1)
    assert split_for("2.25.1") == split_for("2.25.1")
    assert {split_for(f"2.25.{i}") for i in range(200)} == {"train", "val", "test"}
    demo = source_views("/data/ph", {"images": [{"path": "PH1/1_PA/1.dcm", "view": "PA"}]})
    assert demo == [(Path("/data/ph/PH1/1_PA/1.dcm"), "PA")]
    intake = source_views("x", {"files": ["/a/1.dcm", "/a/2.dcm"], "views": ["PA", "LL"]})
    assert intake == [(Path("/a/1.dcm"), "PA"), (Path("/a/2.dcm"), "LL")]
