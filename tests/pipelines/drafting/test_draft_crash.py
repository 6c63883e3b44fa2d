"""Crash safety: SIGKILL a real drafting worker after 0, 1 and 3 drafts; restarts finish every study once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _draft_worker import AUDIT_KEY, build_tiny_checkpoint, make_phantoms

WORKER = Path(__file__).resolve().parents[1] / "_draft_worker.py"
LEASE_S, THROTTLE_S = 2.0, 0.5
N_STUDIES = 6


def _states(store, ident) -> dict[str, int]:
    from sqlalchemy import func, select

    from pipelines.store.models import JobRecord

    with store.transaction() as session:
        rows = session.execute(select(JobRecord.state, func.count()).where(
            JobRecord.model_version == ident.model_version).group_by(JobRecord.state)).all()
    return {state: int(n) for state, n in rows}


def _wait(predicate, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"worker exited early with code {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("worker made no progress in time")


@pytest.mark.slow
def test_sigkill_after_0_1_3_drafts_then_restart_drafts_each_study_once(tmp_path):
    from sqlalchemy import select

    from dicom_io.sources import FolderSource
    from pipelines.drafting.identity import DraftOptions, model_identity
    from pipelines.drafting.intake import IntakeStats, intake_study
    from pipelines.store import open_store
    from pipelines.store.models import DraftRecord, JobRecord, ReportVersion

    ckpt = build_tiny_checkpoint(tmp_path / "ckpt")
    phantoms = make_phantoms(tmp_path / "ph", n=N_STUDIES, seed=3)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    options = DraftOptions(lease_seconds=LEASE_S, batch_size=1)
    ident = model_identity(ckpt, options)
    store = open_store(url, audit_key=AUDIT_KEY)
    stats = IntakeStats()
    for study in FolderSource(phantoms).studies():
        intake_study(store, study.study_key, study.files, ident, options, source="test", stats=stats)
    assert stats.queued == N_STUDIES

    def run(worker_id: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(WORKER), url, str(ckpt), worker_id, str(LEASE_S),
                                 str(THROTTLE_S)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    killed_at = []
    for target in (0, 1, 3):
        proc = run(f"worker-{target}")
        if target == 0:  # a job is leased (drafting has begun) but nothing is complete yet
            _wait(lambda: _states(store, ident).get("leased", 0) >= 1, proc)
        else:
            _wait(lambda t=target: _states(store, ident).get("done", 0) >= t, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at.append(_states(store, ident))
    assert killed_at[0].get("done", 0) == 0 and killed_at[0].get("leased", 0) == 1
    assert killed_at[2].get("done", 0) < N_STUDIES, "the last kill must interrupt unfinished work"

    final = run("worker-final")
    _, err = final.communicate(timeout=180)
    assert final.returncode == 0, err.decode(errors="replace")[-2000:]

    with store.transaction() as session:
        jobs = session.scalars(select(JobRecord)).all()
        drafts = session.scalars(select(DraftRecord)).all()
        versions = session.scalars(select(ReportVersion)).all()
    assert len(jobs) == N_STUDIES and {j.state for j in jobs} == {"done"}
    assert len({j.study_uid for j in jobs}) == N_STUDIES
    assert len(drafts) == N_STUDIES and len({d.job_id for d in drafts}) == N_STUDIES
    assert sorted(v.draft_id for v in versions) == sorted(d.id for d in drafts)  # one version per draft
    assert max(j.attempts for j in jobs) >= 2  # killed jobs were claimed again after their lease expired
    store.close()
