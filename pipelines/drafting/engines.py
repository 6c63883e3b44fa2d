"""How the drafting workers run, chosen in one place (`build_engine`) behind one small interface.

An `Engine` runs the job's intake and drafts every job it queued:

* `InProcessEngine` (``--engine local --workers 0``): intake first, then the worker loop in the
  calling process (tests, small runs; works with an in-memory SQLite store).
* `ProcessEngine` (``--engine local --workers N``): N ``spawn``ed worker processes, started before
  intake so that drafting overlaps it; their progress comes back over a queue.
* `pipelines.drafting.ray_engine.RayEngine` (``--engine ray``): a Ray Data actor pool after intake;
  imported only when chosen (Ray is optional and slow to import).

Every engine drives the same loop pieces (`pipelines.drafting.worker`) with a `ModelDrafter`, so
the store's claim/complete protocol keeps every study drafted exactly once whichever runs.
"""

from __future__ import annotations

import os
import queue as queue_mod
import time
from collections.abc import Callable
from typing import Any, Protocol

from pipelines.drafting.identity import DraftError, DraftOptions, ModelIdentity
from pipelines.drafting.worker import ModelDrafter, ProgressFn, load_bundle, pending_for, worker_loop
from pipelines.store import Store, open_store

ENGINES = ("local", "ray")

Intake = Callable[[Callable[[], None]], None]
"""The job's intake: queues every study of the source, calling its argument (``tick``) after each
one so that the engine can forward its workers' progress meanwhile."""


class Engine(Protocol):
    """Runs intake and the drafting workers of one job."""

    name: str
    """``local`` or ``ray`` (reported in the job summary)."""

    def run(self, intake: Intake, on_job: ProgressFn) -> list[str]:
        """Run `intake`, then draft every pending job of the model (overlapping intake if it can).

        Args:
            intake: the job's intake (see `Intake`).
            on_job: progress callback, called in this process.

        Returns:
            PHI-free notes for the user (e.g. a worker process that died).
        """
        ...


class InProcessEngine:
    """Drafts in the calling process once intake is done (``--workers 0``)."""

    name = "local"

    def __init__(self, store: Store, ident: ModelIdentity, options: DraftOptions) -> None:
        self.store, self.ident, self.options = store, ident, options

    def run(self, intake: Intake, on_job: ProgressFn) -> list[str]:
        """See `Engine.run`; the model is loaded only when something is pending."""
        intake(lambda: None)
        if pending_for(self.store, self.ident) > 0:
            drafter = ModelDrafter(self.store, load_bundle(self.ident), self.ident, self.options)
            worker_loop(self.store, drafter, self.ident, f"draft-{os.getpid()}", self.options, on_job=on_job)
        return []


def die_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """End this (child) process as soon as its parent is gone, even if the parent was SIGKILLed.

    Two guards: on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` asks the kernel to kill us when the
    parent dies (via ctypes: no extra dependency; it fires when the parent's *thread* that started us
    ends, which is the job's main thread); everywhere, a daemon thread polls ``os.getppid()`` and
    exits when we were re-parented (this also covers a parent that died before the prctl call).
    A dead worker's leases are released by the next run at once (`pipelines.store.owners`).

    Args:
        parent_pid: the pid of the process that started us.
        poll_s: seconds between two looks at the parent.
    """
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc symbol: the polling thread still guards
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(3)  # no cleanup to run: the store's transactions roll back, leases are released later

    if os.getppid() != parent_pid:
        os._exit(3)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _worker_main(url: str, audit_key: bytes | None, ident: ModelIdentity, options: DraftOptions, worker_id: str,
                 threads: int | None, intake_done: Any, events: Any, parent_pid: int | None = None) -> None:
    """Entry point of a spawned worker process: watch the parent, load the model once, then `worker_loop`."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    bundle = load_bundle(ident, threads)

    def on_job(pseudo: str, outcome: str, detail: str) -> None:
        events.put((worker_id, pseudo, outcome, detail))

    with open_store(url, migrate=False, audit_key=audit_key) as store:
        worker_loop(store, ModelDrafter(store, bundle, ident, options), ident, worker_id, options,
                    intake_done=intake_done, on_job=on_job)


class ProcessEngine:
    """`workers` spawned processes, each loading the model once and running `worker_loop`.

    Args:
        store: the open store (its URL must be reachable from the workers: a file or a server).
        ident: model identity.
        options: run options (``threads_per_worker``: torch threads per process; default 1 with
            several workers, so that they do not oversubscribe the cores).
        workers: processes to spawn (>= 1).
    """

    name = "local"

    def __init__(self, store: Store, ident: ModelIdentity, options: DraftOptions, workers: int) -> None:
        self.store, self.ident, self.options, self.workers = store, ident, options, workers

    def run(self, intake: Intake, on_job: ProgressFn) -> list[str]:
        """See `Engine.run`; workers start before intake and wait for it to finish before they stop."""
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        intake_done, events = ctx.Event(), ctx.Queue()
        url = self.store.engine.url.render_as_string(hide_password=False)
        threads = self.options.threads_per_worker or (1 if self.workers > 1 else None)
        procs: list[Any] = []
        try:
            for i in range(self.workers):
                wid = f"draft-{os.getpid()}-{i}"
                p = ctx.Process(target=_worker_main, name=wid, daemon=True,
                                args=(url, self.store.audit_key, self.ident, self.options, wid, threads,
                                      intake_done, events, os.getpid()))
                p.start()
                procs.append(p)
            intake(lambda: _drain(events, on_job))
            intake_done.set()
            while any(p.is_alive() for p in procs):
                _drain(events, on_job, timeout=0.2)
            _drain(events, on_job)
        finally:
            intake_done.set()
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=5)
        return [f"worker {p.name} exited with code {p.exitcode}; its leased jobs are released as soon as a "
                "worker runs again (run the job again to finish them)" for p in procs if p.exitcode]


def _drain(events: Any, on_job: ProgressFn, timeout: float | None = None) -> None:
    """Forward worker events to the progress display; waits up to `timeout` for the first one."""
    block = timeout is not None
    while True:
        try:
            _, pseudo, outcome, detail = events.get(block, timeout) if block else events.get_nowait()
        except queue_mod.Empty:
            return
        except (EOFError, OSError):
            return
        on_job(pseudo, outcome, detail)
        block = False


def build_engine(kind: str, workers: int, store: Store, ident: ModelIdentity, options: DraftOptions, *,
                 ray_address: str | None = None) -> Engine:
    """The one place that picks how workers run.

    Args:
        kind: ``local`` or ``ray``.
        workers: local: worker processes (0 = in this process); ray: actors (>= 1).
        store: the open store.
        ident: model identity.
        options: run options.
        ray_address: Ray cluster address (None = a local cluster).

    Returns:
        The engine.

    Raises:
        DraftError: unknown engine, bad worker count, or an in-memory SQLite store with workers.
    """
    check_engine(kind, workers)
    if kind == "ray":
        from pipelines.drafting.ray_engine import RayEngine

        return RayEngine(store, ident, options, workers, address=ray_address)
    if workers == 0:
        return InProcessEngine(store, ident, options)
    if store.dialect == "sqlite" and store.engine.url.database in (None, "", ":memory:"):
        raise DraftError("an in-memory SQLite store cannot be shared with worker processes: use a file or "
                         "--workers 0")
    return ProcessEngine(store, ident, options, workers)


def check_engine(kind: str, workers: int) -> None:
    """Check ``--engine`` and ``--workers`` before any work starts.

    Raises:
        DraftError: unknown engine or bad worker count.
    """
    if kind not in ENGINES:
        raise DraftError(f"--engine must be local or ray, got {kind!r}")
    if workers < 0 or (kind == "ray" and workers < 1):
        raise DraftError(f"--workers must be >= 0 (>= 1 with --engine ray), got {workers}")
