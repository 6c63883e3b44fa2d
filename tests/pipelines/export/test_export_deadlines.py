"""Operators see failure (issue 14): `medvlm export` exits non-zero when a send failed, and gives up on a
PACS that accepts the connection and never answers within its per-instance and overall deadlines."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from _draft_worker import make_phantoms
from typer.testing import CliRunner

from compliance.audit import find_events
from pipelines.cli import app
from pipelines.store import open_store


class SilentServer:
    """A TCP server on loopback that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._sock.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def signed_db(tmp_path_factory) -> str:
    """A SQLite store with three signed studies whose source DICOM files exist."""
    import pydicom

    from pipelines.store import open_store
    from pipelines.store.jobs import DraftPayload, claim, complete, enqueue
    from pipelines.store.reviews import create_version_from_draft, sign_version
    from pipelines.store.studies import set_study_metadata

    root = tmp_path_factory.mktemp("signed")
    phantoms = make_phantoms(root / "ph", n=3, seed=5, size=64)
    by_study: dict[str, list[str]] = {}
    for path in sorted(phantoms.rglob("*.dcm")):
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        by_study.setdefault(uid, []).append(str(path))
    url = f"sqlite:///{root / 'store.db'}"
    with open_store(url) as store:
        for uid, files in sorted(by_study.items()):
            job_id = enqueue(store, uid, "m1", "p")
            set_study_metadata(store, uid, {"files": files})
            claim(store, "w", 30)
            complete(store, job_id, "w", DraftPayload(findings="Lungs clear.", impression="Normal."))
            sign_version(store, create_version_from_draft(store, job_id).id, signer="dr.a", role="radiologist")
    assert len(by_study) == 3
    return url


def _export(db: str, sink: str, *options: str):
    started = time.monotonic()
    out = CliRunner().invoke(app, ["export", "--db", db, "--sink", sink, *options])
    return out, time.monotonic() - started


def _copy(db: str, tmp_path: Path) -> str:
    """A private copy of the module's store (each test's export leaves audit events behind)."""
    import shutil

    src = Path(db.removeprefix("sqlite:///"))
    shutil.copyfile(src, tmp_path / "store.db")
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.mark.parametrize("kind", ["cstore", "stow"])
def test_export_gives_up_on_a_pacs_that_never_answers(signed_db, silent_server, tmp_path, kind):
    db = _copy(signed_db, tmp_path)
    sink = (f"cstore://PACS@127.0.0.1:{silent_server.port}" if kind == "cstore"
            else f"stow:http://127.0.0.1:{silent_server.port}/dicom-web")
    out, seconds = _export(db, sink, "--connect-timeout", "1", "--send-timeout", "1", "--deadline", "2")
    # old code: 31 s per version (C-STORE), 93 s (STOW), exit 0
    assert out.exit_code == 1, out.output
    assert seconds < 2 + 1 + 2, seconds  # the deadline, at most one send's timeout past it, slack for a busy CPU
    assert "pacs_timeout: " in out.output and "export incomplete: 3 failed" in out.output
    with open_store(db) as store, store.transaction() as s:
        codes = sorted(e.details["code"] for e in find_events(s, action="report.export", outcome="failed"))
    assert len(codes) == 3 and set(codes) <= {"pacs_timeout", "deadline_exceeded"}, codes


def test_export_exits_non_zero_when_every_send_fails(signed_db, tmp_path):
    db = _copy(signed_db, tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as probe:  # a port nobody listens on once closed
        port = probe.getsockname()[1]
    out, seconds = _export(db, f"cstore://PACS@127.0.0.1:{port}", "--send-timeout", "2")
    assert out.exit_code == 1, out.output  # old code: exit 0 with "failed 3"
    assert "pacs_unreachable: 3" in out.output and seconds < 10


def test_export_exits_zero_when_nothing_failed(signed_db, tmp_path):
    db = _copy(signed_db, tmp_path)
    out, _ = _export(db, "none", "--study", "all")
    assert out.exit_code == 0, out.output
