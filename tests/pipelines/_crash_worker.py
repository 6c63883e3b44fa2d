"""A worker process for the queue's crash test: the production worker loop with a slow fake drafter.

Usage: python tests/pipelines/_crash_worker.py URL WORKER_ID SLEEP_SECONDS LEASE_SECONDS

It drafts every queued job of model version ``m1`` / prompt ``p`` through
`pipelines.drafting.worker.worker_loop` (one job per batch, leases renewed by the loop), with a
drafter that sleeps instead of running a model, then exits.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipelines.drafting.identity import DraftOptions, ModelIdentity  # noqa: E402
from pipelines.drafting.worker import Drafted, worker_loop  # noqa: E402
from pipelines.store import open_store  # noqa: E402
from pipelines.store.jobs import DraftPayload, Job  # noqa: E402

IDENT = ModelIdentity(checkpoint="(fake)", model_version="m1", prompt_hash="p", adapter_hash=None, image_size=32)


class SlowDrafter:
    """Stands in for inference (outside any transaction): sleeps, then returns a fixed report."""

    def __init__(self, sleep_s: float) -> None:
        self.sleep_s = sleep_s

    def draft(self, jobs: Sequence[Job]) -> list[Drafted | Exception]:
        time.sleep(self.sleep_s)
        return [Drafted(DraftPayload(findings=f"findings for job {j.id}", impression="No acute disease."))
                for j in jobs]


def main(url: str, worker_id: str, sleep_s: float, lease_s: float) -> None:
    options = DraftOptions(lease_seconds=lease_s, batch_size=1, poll_seconds=0.1)
    with open_store(url, audit_key=b"test-key") as store:
        worker_loop(store, SlowDrafter(sleep_s), IDENT, worker_id, options)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
