"""`medvlm draft --engine ray`: the drafting stage through Ray Data on a local or remote cluster.

Intake (gate and queue) runs in the driver as for the local engine; then a Ray Dataset of
``pending`` slots is mapped with `map_batches` over an actor pool (`DraftActor`, one model per
actor, loaded once). An actor does not receive jobs from Ray: for each batch of slots it claims up
to that many jobs from the review store with a lease and drafts them through the same functions as
a local worker (`pipelines.drafting.worker.claim_batch` and `draft_jobs` with a `ModelDrafter`), so the
store's claim/complete protocol keeps every study drafted exactly once even when Ray retries a task
or an actor dies. `RayEngine` is the `pipelines.drafting.engines.Engine` that runs it; only
`engines.build_engine` imports this module.

Local cluster settings (FACTS.md): ``ray.init(num_cpus=2, include_dashboard=False,
object_store_memory=100 MiB)`` with ``RAY_USAGE_STATS_ENABLED=0``, ``RAY_AUTH_MODE=disabled`` and
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (binds to 127.0.0.1); actors ask for **fractional** CPUs
(0.5 each): a pool of ``num_cpus=1`` actors on a 2-CPU node deadlocks, the read tasks getting no CPU.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.drafting.identity import DraftOptions, ModelIdentity
from pipelines.drafting.worker import (
    ModelDrafter,
    ProgressFn,
    claim_batch,
    draft_jobs,
    load_bundle,
    pending_for,
)
from pipelines.store import Store, open_store
from pipelines.store.owners import owner_id

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass(frozen=True)
class RayClusterConfig:
    """How to reach (or start) the Ray cluster."""

    address: str | None = None
    """``ray://HOST:10001`` or ``HOST:6379`` of a running cluster; None starts a local one."""
    num_cpus: int = 2
    """CPUs of the local cluster."""
    object_store_mb: int = 100
    """Object store of the local cluster in MiB (Ray's minimum is 75)."""
    actor_cpus: float = 0.5
    """CPUs reserved per actor; fractional so read tasks still get a CPU (see the module docstring)."""
    max_passes: int = 5
    """Dataset passes while jobs stay pending (leases of dead actors expire between passes)."""


class DraftActor:
    """A Ray Data callable class: holds the model and a store connection; drafts claimed jobs.

    Args:
        url: store URL (reachable from every node: PostgreSQL for a real cluster).
        audit_key: pseudonym key of the store.
        ident: model identity (only its jobs are claimed).
        options: run options.
        threads: torch intra-op threads per actor.
    """

    def __init__(self, url: str, audit_key: bytes, ident: ModelIdentity, options: DraftOptions,
                 threads: int = 1) -> None:
        self.ident, self.options = ident, options
        self.store = open_store(url, migrate=False, audit_key=audit_key)
        self.drafter = ModelDrafter(self.store, load_bundle(ident, threads), ident, options)
        # NAME@HOST#PID: a later run on this host releases the jobs of an actor that died (store.owners)
        self.worker_id = owner_id("ray")

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Claim up to ``len(batch["id"])`` jobs, draft them, return one row per job outcome."""
        import numpy as np

        jobs = claim_batch(self.store, self.ident, self.worker_id, self.options, size=len(batch["id"]))
        rows: list[tuple[str, str, str]] = []
        if jobs:
            draft_jobs(self.store, self.drafter, self.ident, jobs, self.worker_id, self.options,
                       on_job=lambda pseudo, outcome, detail: rows.append((pseudo, outcome, detail)))
        return {key: np.array([r[i] for r in rows], dtype=object)
                for i, key in enumerate(("pseudo", "outcome", "detail"))}


def run_ray_workers(url: str, audit_key: bytes, ident: ModelIdentity, options: DraftOptions, workers: int, *,
                    address: str | None = None, on_job: ProgressFn | None = None,
                    cluster: RayClusterConfig | None = None) -> Counter:
    """Draft every pending job of `ident` with a pool of `workers` Ray actors.

    Args:
        url: store URL (an in-memory SQLite store cannot be shared).
        audit_key: the store's pseudonym key.
        ident: model identity.
        options: run options (``batch_size`` slots per actor call).
        workers: actors in the pool.
        address: cluster address; overrides ``cluster.address``.
        on_job: progress callback (pseudonym, outcome, detail), called in the driver.
        cluster: cluster settings.

    Returns:
        Outcome counts (``done``, ``quarantined``, ``failed``, ``requeued``, ``lost``).
    """
    import ray

    cluster = cluster or RayClusterConfig()
    address = address or cluster.address
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=cluster.num_cpus, include_dashboard=False, log_to_driver=False,
                     object_store_memory=cluster.object_store_mb * 2**20)
    counts: Counter = Counter()
    try:
        with open_store(url, migrate=False, audit_key=audit_key) as store:
            for _ in range(cluster.max_passes):
                pending = pending_for(store, ident)
                if pending == 0:
                    break
                ds = ray.data.range(pending, override_num_blocks=max(1, min(pending, 4 * workers)))
                out = ds.map_batches(
                    DraftActor,
                    fn_constructor_kwargs={"url": url, "audit_key": audit_key, "ident": ident, "options": options},
                    batch_size=options.batch_size,
                    batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=workers),
                    num_cpus=cluster.actor_cpus,
                )
                drafted = 0
                for row in out.iter_rows():
                    counts[row["outcome"]] += 1
                    drafted += 1
                    if on_job is not None:
                        on_job(str(row["pseudo"]), str(row["outcome"]), str(row["detail"]))
                if drafted == 0:  # everything pending is leased by someone else: wait for leases to expire
                    time.sleep(min(options.lease_seconds, 5.0))
    finally:
        if started_here:
            ray.shutdown()
    return counts


class RayEngine:
    """The `pipelines.drafting.engines.Engine` of ``--engine ray``: intake, then `run_ray_workers`.

    Args:
        store: the open store (its URL must be reachable from every node).
        ident: model identity.
        options: run options.
        workers: actors in the pool.
        address: cluster address (None = a local cluster).
    """

    name = "ray"

    def __init__(self, store: Store, ident: ModelIdentity, options: DraftOptions, workers: int, *,
                 address: str | None = None) -> None:
        self.store, self.ident, self.options, self.workers, self.address = store, ident, options, workers, address

    def run(self, intake: Callable[[Callable[[], None]], None], on_job: ProgressFn) -> list[str]:
        """See `pipelines.drafting.engines.Engine.run`; drafting starts once intake is done."""
        intake(lambda: None)
        if pending_for(self.store, self.ident) > 0:
            url = self.store.engine.url.render_as_string(hide_password=False)
            run_ray_workers(url, self.store.audit_key, self.ident, self.options, self.workers,
                            address=self.address, on_job=on_job)
        return []
