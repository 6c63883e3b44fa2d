"""`medvlm draft` on a folder holding the worst entries a file system offers, next to good phantom studies:
the run finishes, exit 0, the good studies are drafted and every bad entry is quarantined with its reason."""

from __future__ import annotations

from _bad_entries import BadEntries
from _draft_worker import AUDIT_KEY, build_tiny_checkpoint, make_phantoms


def test_cli_draft_drafts_good_studies_and_records_every_bad_entry(tmp_path, monkeypatch):
    from sqlalchemy import select
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.store import open_store
    from pipelines.store.models import StudyRecord

    ckpt = build_tiny_checkpoint(tmp_path / "ckpt")
    src = make_phantoms(tmp_path / "src", n=2, seed=4)
    (src / "reports.jsonl").unlink(missing_ok=True)
    bad = BadEntries(src, tmp_path / "outside.dcm")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MEDVLM_AUDIT_KEY", AUDIT_KEY.decode())
    monkeypatch.chdir(tmp_path)
    try:
        result = CliRunner().invoke(app, ["draft", "--model", str(ckpt), "--source", str(src), "--db", url,
                                          "--workers", "0"])
    finally:
        bad.close()
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    with open_store(url, audit_key=AUDIT_KEY) as store, store.transaction() as session:
        studies = list(session.scalars(select(StudyRecord)).all())
    assert sum(s.status == "drafted" for s in studies) == 2
    recorded = {}
    for s in studies:
        if s.status == "quarantined":
            (entry,) = s.metadata_json["rejected"]
            recorded[entry["file"]] = entry["code"]
            assert s.quarantine_reason.startswith(entry["code"])
    assert recorded == bad.expected
