"""A worker process for the crash test: drafts every queued job with a slow fake drafter.

Usage: python tests/pipelines/_crash_worker.py URL WORKER_ID SLEEP_SECONDS LEASE_SECONDS
"""

from __future__ import annotations

import sys
import time

from pipelines.store import open_store
from pipelines.store.jobs import DraftPayload, Job, run_worker


def main(url: str, worker_id: str, sleep_s: float, lease_s: float) -> None:
    def drafter(job: Job) -> DraftPayload:
        time.sleep(sleep_s)  # stands in for inference, outside any transaction
        return DraftPayload(findings=f"findings for job {job.id}", impression="No acute disease.")

    with open_store(url, audit_key=b"test-key") as store:
        run_worker(store, drafter, worker_id, lease_seconds=lease_s, poll_seconds=0.1, heartbeat=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
