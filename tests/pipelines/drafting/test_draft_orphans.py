"""Operators see failure: a killed worker's jobs are taken over at once by the next run (same host, owner
process gone), and worker processes die with a SIGKILLed `medvlm draft` parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _draft_worker import AUDIT_KEY, build_tiny_checkpoint, make_phantoms

WORKER = Path(__file__).resolve().parents[1] / "_draft_worker.py"
LONG_LEASE_S = 300.0  # the default lease: the old code idled this long before a re-run could draft


def _states(store) -> dict[str, int]:
    from pipelines.store.jobs import count_by_state

    return count_by_state(store)


def _wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited early with code {proc.returncode} while waiting for {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


@pytest.mark.slow  # two worker processes load torch (~20-40 s on 2 shared cores)
def test_rerun_after_sigkill_drafts_at_once_not_after_the_lease(tmp_path):
    from compliance.audit import read_events
    from dicom_io.sources import FolderSource
    from pipelines.drafting.identity import DraftOptions, model_identity
    from pipelines.drafting.intake import IntakeStats, intake_study
    from pipelines.store import open_store

    ckpt = build_tiny_checkpoint(tmp_path / "ckpt")
    phantoms = make_phantoms(tmp_path / "ph", n=3, seed=5)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    options = DraftOptions(lease_seconds=LONG_LEASE_S, batch_size=1)
    ident = model_identity(ckpt, options)
    store = open_store(url, audit_key=AUDIT_KEY)
    stats = IntakeStats()
    for study in FolderSource(phantoms).studies():
        intake_study(store, study.study_key, study.files, ident, options, source="test", stats=stats)
    assert stats.queued == 3

    def worker(name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(WORKER), url, str(ckpt), name, str(LONG_LEASE_S), "1.0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    first = worker("first")
    _wait_for(lambda: _states(store).get("leased", 0) >= 1, 90, "a leased job", first)
    first.send_signal(signal.SIGKILL)  # mid-batch: a job is leased for 300 s
    first.wait(timeout=10)
    assert _states(store).get("leased", 0) == 1

    started = time.monotonic()
    final = worker("final")
    try:
        _, err = final.communicate(timeout=60)  # the old code idled ~300 s here
    except subprocess.TimeoutExpired:
        final.kill()
        pytest.fail("the re-run waited for the dead worker's lease")
    seconds = time.monotonic() - started
    assert final.returncode == 0, err.decode(errors="replace")[-2000:]
    assert _states(store) == {"done": 3}
    print(f"re-run after SIGKILL drafted the rest in {seconds:.1f} s (lease {LONG_LEASE_S:.0f} s)")
    assert seconds < 60
    with store.transaction() as session:
        released = [e for e in read_events(session, actor="test") if e.action == "job.release"]
    assert len(released) == 1 and released[0].details["reason"] == "owner_process_gone"
    assert released[0].details["previous_owner"].startswith("first@")
    store.close()


@pytest.mark.slow  # the CLI and its worker process load torch (~15 s)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_draft_parent_is_sigkilled(tmp_path):
    from pipelines.store import open_store
    from pipelines.store.owners import pid_alive

    ckpt = build_tiny_checkpoint(tmp_path / "ckpt")
    src = make_phantoms(tmp_path / "src", n=1, seed=6)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    env = {**os.environ, "MEDVLM_AUDIT_KEY": AUDIT_KEY.decode(), "PYTHONPATH": str(Path.cwd())}
    parent = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "draft", "--model", str(ckpt), "--source",
                               f"folder+watch:{src}", "--db", url, "--workers", "1"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with open_store(url, audit_key=AUDIT_KEY) as store:
            _wait_for(lambda: _states(store).get("done", 0) >= 1, 120, "the worker's first draft", parent)
        workers = [pid for pid in _children(parent.pid)
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert workers, "the job should run a worker process"
        parent.send_signal(signal.SIGKILL)  # the watched folder would keep the job (and workers) going
        parent.wait(timeout=10)
        killed = time.monotonic()
        _wait_for(lambda: not any(pid_alive(pid) for pid in workers), 10, "the orphaned worker to exit")
        print(f"worker exited {time.monotonic() - killed:.2f} s after its parent was SIGKILLed")
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in _children(parent.pid):
            os.kill(pid, signal.SIGKILL)
