"""Leases kept alive: a worker that drafts for longer than its lease renews it, in the background.

A claimed job's lease (`pipelines.store.jobs.claim`) runs out after ``lease_seconds`` so that a dead
worker's jobs are taken over; a live worker drafting a long batch outside any transaction keeps its
jobs with `LeaseKeeper`, which calls `renew_lease` every third of the lease.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from compliance.audit import append_event
from pipelines.store.db import Store
from pipelines.store.jobs import JobError, lock_job
from pipelines.store.models import utcnow


def renew_lease(store: Store, job_id: int, worker_id: str, lease_seconds: float) -> bool:
    """Extend the lease by ``lease_seconds`` from now if ``worker_id`` still owns it.

    Returns:
        True when renewed, False when the lease was lost.
    """
    with store.transaction() as session:
        rec, owned = lock_job(session, job_id, worker_id)
        if not owned:
            return False
        now = utcnow()
        rec.lease_expires_at, rec.updated_at = now + timedelta(seconds=lease_seconds), now
        append_event(session, actor=worker_id, action="job.renew", object_type="job", object_id=str(rec.id),
                     details={"lease_seconds": lease_seconds})
        return True

class LeaseKeeper:
    """Renews the leases of claimed jobs in a background thread while they are worked on outside
    any transaction (a context manager).

    Every ``lease_seconds / 3`` each lease still held is renewed with ``renew_lease``; a job whose
    lease was lost is dropped (its result will be refused by ``complete``), and the thread ends once
    none is left. A renewal that raises (a database hiccup) is tried again at the next tick: a
    missed renewal only risks a second draft, which ``complete`` refuses.

    Args:
        job_ids: the jobs whose leases ``worker_id`` holds.
        worker_id: the lease owner.
        lease_seconds: lease length given at each renewal.
    """

    def __init__(self, store: Store, job_ids: list[int], worker_id: str, lease_seconds: float) -> None:
        if lease_seconds <= 0:
            raise JobError(f"lease_seconds must be > 0, got {lease_seconds}")
        self._store, self._worker_id, self._lease_seconds = store, worker_id, lease_seconds
        self._job_ids = list(job_ids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-keeper-{worker_id}", daemon=True)

    def _run(self) -> None:
        held = list(self._job_ids)
        while held and not self._stop.wait(self._lease_seconds / 3):
            for job_id in list(held):
                try:
                    if not renew_lease(self._store, job_id, self._worker_id, self._lease_seconds):
                        held.remove(job_id)
                except Exception:  # noqa: BLE001, S112 - retried at the next tick
                    continue

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
