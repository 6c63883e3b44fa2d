"""Job queue: idempotent enqueue, atomic claims, leases, stale workers, retries, crash recovery.

The worker tests drive the production loop (`pipelines.drafting.worker.worker_loop`) with fake
drafters; the crash test SIGKILLs it in `_crash_worker.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from compliance.audit import find_events, verify_chain
from pipelines.drafting.identity import DraftOptions, ModelIdentity
from pipelines.drafting.intake import QuarantineError
from pipelines.drafting.worker import Drafted, worker_loop
from pipelines.store.jobs import (
    DraftPayload,
    JobError,
    LeaseLostError,
    claim,
    complete,
    count_by_state,
    done_jobs_without_version,
    enqueue,
    fail,
    job_state,
    pending_count,
    quarantine,
)
from pipelines.store.leases import LeaseKeeper, renew_lease
from pipelines.store.models import DraftRecord, JobRecord, ReportVersion, StudyRecord, utcnow
from pipelines.store.studies import (
    add_study,
    get_study_metadata,
    outcome_counts,
    quarantine_study,
    set_study_metadata,
)

REPO = Path(__file__).resolve().parents[3]
PAYLOAD = DraftPayload(
    findings="Clear lungs.", impression="No acute disease.", sentences=[{"text": "x", "confidence": 0.9}]
)
IDENT = ModelIdentity(checkpoint="(fake)", model_version="m1", prompt_hash="p", adapter_hash=None, image_size=32)


class FakeDrafter:
    """A `Drafter` without a model: `fn(job)` gives each job's payload or raises its error."""

    def __init__(self, fn):
        self.fn, self.batches = fn, []

    def draft(self, jobs):
        self.batches.append([j.id for j in jobs])
        out = []
        for job in jobs:
            try:
                out.append(Drafted(self.fn(job)))
            except Exception as exc:  # noqa: BLE001 - the loop records it
                out.append(exc)
        return out


def _drafts(store, job_id=None) -> int:
    with store.transaction() as s:
        stmt = select(func.count()).select_from(DraftRecord)
        if job_id is not None:
            stmt = stmt.where(DraftRecord.job_id == job_id)
        return int(s.scalar(stmt))


def test_enqueue_is_idempotent(store):
    a = enqueue(store, "1.2.3.1", "m1", "p1")
    assert enqueue(store, "1.2.3.1", "m1", "p1") == a
    b = enqueue(store, "1.2.3.1", "m2", "p1")  # another model version is another job
    assert b != a
    assert count_by_state(store) == {"queued": 2}
    with store.transaction() as s:
        assert s.scalar(select(StudyRecord.status).where(StudyRecord.study_uid == "1.2.3.1")) == "queued"


def test_concurrent_enqueue_creates_one_job(store):
    barrier = threading.Barrier(4)
    ids: list[int] = []

    def go():
        barrier.wait()
        ids.append(enqueue(store, "1.2.3.9", "m1", "p1"))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 4 and len(set(ids)) == 1
    assert count_by_state(store) == {"queued": 1}


def test_concurrent_claims_never_share_a_job(store):
    ids = {enqueue(store, f"1.2.3.{i}", "m1", "p") for i in range(12)}
    got: dict[str, list[int]] = {"a": [], "b": [], "c": []}

    def worker(name):
        while (job := claim(store, name, 60)) is not None:
            got[name].append(job.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [j for js in got.values() for j in js]
    assert sorted(claimed) == sorted(ids)  # each job exactly once
    assert count_by_state(store) == {"leased": 12}


def test_stale_worker_completion_refused_and_no_second_draft(store):
    job_id = enqueue(store, "1.2.3.4", "m1", "p")
    first = claim(store, "w1", 5)
    assert first is not None and first.attempts == 1
    assert claim(store, "w2", 5) is None  # lease still valid
    later = utcnow() + timedelta(seconds=10)
    second = claim(store, "w2", 5, now=later)  # w1's lease expired: reclaimed
    assert second is not None and second.id == job_id and second.attempts == 2
    with pytest.raises(LeaseLostError):
        complete(store, job_id, "w1", PAYLOAD)
    assert _drafts(store) == 0
    complete(store, job_id, "w2", PAYLOAD)
    with pytest.raises(LeaseLostError):  # finished: a late duplicate is refused too
        complete(store, job_id, "w2", PAYLOAD)
    assert _drafts(store, job_id) == 1
    assert not renew_lease(store, job_id, "w1", 5)
    with store.transaction() as s:
        assert verify_chain(s).ok


def test_fail_retries_until_max_attempts(store):
    job_id = enqueue(store, "1.2.3.5", "m1", "p", max_attempts=2)
    job = claim(store, "w", 30)
    assert fail(store, job.id, "w", "RuntimeError", "boom") == "queued"
    job = claim(store, "w", 30)
    assert job.attempts == 2
    assert fail(store, job.id, "w", "RuntimeError", "boom") == "failed"
    assert claim(store, "w", 30) is None
    with store.transaction() as s:
        rec = s.get(JobRecord, job_id)
        assert (rec.state, rec.error_code) == ("failed", "RuntimeError")


def test_expired_lease_at_max_attempts_fails(store):
    job_id = enqueue(store, "1.2.3.6", "m1", "p", max_attempts=1)
    assert claim(store, "w1", 1) is not None
    assert claim(store, "w2", 1, now=utcnow() + timedelta(seconds=5)) is None
    with store.transaction() as s:
        assert s.get(JobRecord, job_id).error_code == "lease_expired"


def test_quarantine_sets_study_aside(store):
    job_id = enqueue(store, "1.2.3.7", "m1", "p")
    claim(store, "w", 30)
    quarantine(store, job_id, "w", "not_chest", "body part is KNEE")
    with store.transaction() as s:
        study = s.scalar(select(StudyRecord).where(StudyRecord.study_uid == "1.2.3.7"))
        assert study.status == "quarantined" and study.quarantine_reason.startswith("not_chest")
    assert count_by_state(store) == {"quarantined": 1}


def test_bad_arguments_are_typed_errors(store):
    with pytest.raises(JobError):
        enqueue(store, "1.2.3.8", "m1", "p", max_attempts=0)
    with pytest.raises(JobError):
        claim(store, "w", 0)
    with pytest.raises(JobError):
        complete(store, 999, "w", PAYLOAD)


def test_worker_loop_drafts_quarantines_and_goes_on(store):
    for i in range(5):
        enqueue(store, f"1.2.5.{i}", "m1", "p", max_attempts=1)
    enqueue(store, "1.2.5.9", "m-other", "p")  # another model's job: not this worker's
    seen = []

    def drafter(job):
        if job.study_uid == "1.2.5.1":
            raise QuarantineError("not_chest", "not a chest radiograph")
        if job.study_uid == "1.2.5.2":
            raise ValueError("pixel data unreadable")
        return DraftPayload(findings=f"f{job.id}", impression="i", flags={"low_confidence": False})

    fake = FakeDrafter(drafter)
    counts = worker_loop(store, fake, IDENT, "w", DraftOptions(lease_seconds=30, batch_size=2),
                         on_job=lambda pseudo, outcome, detail: seen.append(outcome))
    assert counts == {"done": 3, "quarantined": 1, "failed": 1}
    assert sorted(seen) == ["done", "done", "done", "failed", "quarantined"]
    assert [len(b) for b in fake.batches] == [2, 2, 1]  # claimed in batches of batch_size
    assert count_by_state(store) == {"done": 3, "quarantined": 1, "failed": 1, "queued": 1}
    with store.transaction() as s:
        assert s.scalar(select(func.count()).select_from(ReportVersion)) == 3  # one review version per draft
        rec = s.scalar(select(JobRecord).where(JobRecord.study_uid == "1.2.5.2"))
        assert (rec.error_code, rec.error_message) == ("ValueError", "drafting error (ValueError)")  # no text: PHI
    out = outcome_counts(store, [f"1.2.5.{i}" for i in range(5)], model_version="m1", prompt_hash="p")
    assert (out.done, dict(out.quarantined), dict(out.failed), out.pending) == (
        3, {"not_chest": 1}, {"ValueError": 1}, 0)
    assert done_jobs_without_version(store, model_version="m1", prompt_hash="p") == []


def test_worker_loop_fails_the_batch_when_the_drafter_raises(store):
    ids = [enqueue(store, f"1.2.5.{i}", "m1", "p", max_attempts=2) for i in range(2)]

    class Broken:
        def draft(self, jobs):
            raise RuntimeError("out of memory")

    counts = worker_loop(store, Broken(), IDENT, "w", DraftOptions(lease_seconds=30, batch_size=2),
                         max_batches=1)
    assert counts == {"requeued": 2}
    assert [job_state(store, f"1.2.5.{i}", "m1", "p") for i in range(2)] == [(i, "queued") for i in ids]


def test_heartbeat_keeps_a_long_job_leased(store):
    job_id = enqueue(store, "1.2.6.1", "m1", "p")
    stolen = []

    def drafter(job):
        time.sleep(1.2)  # longer than the lease; the loop renews it every 0.2 s
        stolen.append(claim(store, "thief", 0.6))
        return PAYLOAD

    counts = worker_loop(store, FakeDrafter(drafter), IDENT, "w", DraftOptions(lease_seconds=0.6, batch_size=1))
    assert stolen == [None] and counts == {"done": 1} and _drafts(store, job_id) == 1


def test_claim_filters_by_model_version_and_prompt(store):
    other = enqueue(store, "1.2.7.1", "m-other", "p", priority=5)  # higher priority, other model
    mine = enqueue(store, "1.2.7.2", "m1", "p")
    enqueue(store, "1.2.7.3", "m1", "p-other")
    job = claim(store, "w", 30, model_version="m1", prompt_hash="p")
    assert job is not None and job.id == mine
    assert claim(store, "w", 30, model_version="m1", prompt_hash="p") is None
    assert pending_count(store, model_version="m1", prompt_hash="p") == 1  # the leased one
    assert pending_count(store, model_version="m1") == 2
    assert pending_count(store) == 3
    assert claim(store, "w2", 30).id == other  # unfiltered: the old signature still works


def test_filtered_claim_fails_an_exhausted_expired_lease(store):
    job_id = enqueue(store, "1.2.7.4", "m1", "p", max_attempts=1)
    assert claim(store, "w1", 1, model_version="m1", prompt_hash="p") is not None
    later = utcnow() + timedelta(seconds=5)
    assert claim(store, "w2", 1, now=later, model_version="m1", prompt_hash="p") is None
    assert job_state(store, "1.2.7.4", "m1", "p") == (job_id, "failed")
    assert job_state(store, "1.2.7.4", "m2", "p") is None


def test_quarantine_study_without_a_job(store):
    quarantine_study(store, "1.2.8.1", "no_frontal_view", "no PA/AP image", source="folder",
                     metadata={"files": ["a.dcm"]}, actor="intake")  # fmt: skip
    with store.transaction() as s:
        study = s.scalar(select(StudyRecord).where(StudyRecord.study_uid == "1.2.8.1"))
        assert study.status == "quarantined"
        assert study.quarantine_reason == "no_frontal_view: no PA/AP image"
    assert get_study_metadata(store, "1.2.8.1") == {"files": ["a.dcm"]}
    assert count_by_state(store) == {}  # no job was created
    with store.transaction() as s:
        events = find_events(s, action="study.quarantine", outcome="quarantined")
        assert [e.details for e in events] == [{"code": "no_frontal_view"}]
        assert events[0].object_id == store.pseudonym("1.2.8.1") and events[0].actor == "intake"
        assert verify_chain(s).ok


def test_quarantine_study_keeps_metadata_when_none_given(store):
    add_study(store, "1.2.8.2", source="folder", metadata={"views": ["PA"]})
    quarantine_study(store, "1.2.8.2", "not_chest", source="folder")
    assert get_study_metadata(store, "1.2.8.2") == {"views": ["PA"]}
    with store.transaction() as s:
        assert s.scalar(select(StudyRecord.quarantine_reason).where(StudyRecord.study_uid == "1.2.8.2")) == (
            "not_chest"
        )


def test_set_study_metadata_and_reset_status(store):
    assert get_study_metadata(store, "1.2.8.9") == {}
    quarantine_study(store, "1.2.8.3", "no_frontal_view", source="folder", metadata={"files": []})
    set_study_metadata(store, "1.2.8.3", {"files": ["b.dcm"]})
    with store.transaction() as s:
        row = s.execute(select(StudyRecord.status, StudyRecord.quarantine_reason)
                        .where(StudyRecord.study_uid == "1.2.8.3")).one()  # fmt: skip
    assert tuple(row) == ("quarantined", "no_frontal_view")
    set_study_metadata(store, "1.2.8.3", {"files": ["b.dcm", "c.dcm"]}, reset_status=True)
    assert get_study_metadata(store, "1.2.8.3") == {"files": ["b.dcm", "c.dcm"]}
    with store.transaction() as s:
        row = s.execute(select(StudyRecord.status, StudyRecord.quarantine_reason)
                        .where(StudyRecord.study_uid == "1.2.8.3")).one()  # fmt: skip
    assert tuple(row) == ("received", None)


def test_lease_keeper_renews_a_batch_and_drops_lost_leases(store):
    ids = [enqueue(store, f"1.2.9.{i}", "m1", "p") for i in range(2)]
    jobs = [claim(store, "w", 0.6) for _ in ids]
    assert sorted(j.id for j in jobs) == sorted(ids)
    with LeaseKeeper(store, ids, "w", 0.6):
        time.sleep(1.2)  # twice the lease: only the keeper's renewals keep the jobs
        assert claim(store, "thief", 0.6) is None
    with store.transaction() as s:
        renewals = find_events(s, action="job.renew")
    assert {e.object_id for e in renewals} == {str(i) for i in ids}
    assert complete(store, ids[0], "w", PAYLOAD) > 0
    with pytest.raises(JobError):
        LeaseKeeper(store, ids, "w", 0)


def test_lease_keeper_stops_renewing_a_lost_lease(store):
    job_id = enqueue(store, "1.2.9.9", "m1", "p")
    claim(store, "w", 0.3)
    assert claim(store, "thief", 30, now=utcnow() + timedelta(seconds=1)).id == job_id
    with LeaseKeeper(store, [job_id], "w", 0.3):
        time.sleep(0.5)
    with store.transaction() as s:
        assert find_events(s, action="job.renew") == []
        assert s.get(JobRecord, job_id).lease_owner == "thief"


def _worker(url: str, worker_id: str, sleep_s: float, lease_s: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = str(REPO / "tests" / "pipelines" / "_crash_worker.py")
    return subprocess.Popen(
        [sys.executable, script, url, worker_id, str(sleep_s), str(lease_s)], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


@pytest.mark.parametrize("kill_after_done", [0, 2, 4])
def test_worker_killed_mid_run_loses_nothing(store, store_url, kill_after_done):
    n = 6
    for i in range(n):
        enqueue(store, f"1.2.7.{i}", "m1", "p", max_attempts=5)
    proc = _worker(store_url, "victim", 0.3, 1.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until `kill_after_done` drafts exist and a job is mid-flight
        states = count_by_state(store)
        if states.get("done", 0) >= kill_after_done and states.get("leased", 0) == 1:
            break
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert count_by_state(store).get("done", 0) < n  # it really died mid-run
    rerun = _worker(store_url, "survivor", 0.05, 1.0)
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out.decode()[-2000:]
    assert count_by_state(store) == {"done": n}
    with store.transaction() as s:
        per_study = s.execute(
            select(JobRecord.study_uid, func.count(DraftRecord.id))
            .join(DraftRecord)
            .group_by(JobRecord.study_uid)
        ).all()
        assert sorted(per_study) == [(f"1.2.7.{i}", 1) for i in range(n)]
        assert s.scalar(select(func.count()).select_from(ReportVersion)) == n  # one review version each
        assert verify_chain(s).ok
