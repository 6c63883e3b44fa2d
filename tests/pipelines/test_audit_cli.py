"""`medvlm audit verify` on a real store: OK on an intact chain, names the event after tampering."""

from __future__ import annotations

from sqlalchemy import text
from typer.testing import CliRunner

from compliance.audit import drop_audit_guard_ddl
from pipelines.cli import app
from pipelines.store import open_store
from pipelines.store.jobs import enqueue


def test_audit_verify_ok_then_detects_an_edit(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with open_store(url, audit_key=b"k" * 16) as store:
        for i in range(3):
            enqueue(store, f"1.2.3.{i}", "v1", "p1")
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "--db", url])
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output

    with open_store(url, audit_key=b"k" * 16) as store, store.engine.begin() as conn:
        for stmt in drop_audit_guard_ddl("sqlite"):
            conn.execute(text(stmt))
        conn.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2"))
    broken = runner.invoke(app, ["audit", "verify", "--db", url])
    assert broken.exit_code == 1
    assert "BROKEN" in broken.output and "event 2" in broken.output
