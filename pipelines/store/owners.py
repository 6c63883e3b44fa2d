"""Lease owners: who holds a job's lease (name, host, process id), and releasing a dead owner's leases.

A worker id carries its host and process id (``draft-0@host#1234``, `owner_id`). When a worker is
killed, its jobs stay ``leased`` until the lease runs out (300 s by default); on the same host we
can do better: `release_dead_leases` looks at every lease held by a process of this host and puts
the job back in the queue at once when that process is gone. Each release is audited. A process id
that was reused by an unrelated process only delays the release until the lease expires (the safe
side); a lease of another host is never touched here.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from sqlalchemy import select

from compliance.audit import append_event
from pipelines.store.db import Store
from pipelines.store.models import JobRecord, utcnow

_OWNER = re.compile(r"@(?P<host>[^@#]+)#(?P<pid>\d+)$")
_MAX_OWNER = 128  # JobRecord.lease_owner and the audit actor are String(128)


def this_host() -> str:
    """This machine's name as recorded in worker ids (at most 60 characters, no ``@`` or ``#``)."""
    return re.sub(r"[@#\s]", "_", socket.gethostname())[:60] or "localhost"


def owner_id(name: str, pid: int | None = None) -> str:
    """A worker id that names its host and process: ``NAME@HOST#PID`` (unchanged if already one).

    Args:
        name: the worker's own label (``draft-0``).
        pid: its process id (default: this process).
    """
    if _OWNER.search(name):
        return name
    tail = f"@{this_host()}#{os.getpid() if pid is None else pid}"
    return name[: _MAX_OWNER - len(tail)] + tail


def owner_process(worker_id: str | None) -> tuple[str, int] | None:
    """``(host, pid)`` of a worker id made by `owner_id`, else None."""
    match = _OWNER.search(worker_id or "")
    return (match["host"], int(match["pid"])) if match else None


def pid_alive(pid: int) -> bool:
    """True while process `pid` exists on this host and is not a zombie (killed, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    try:  # Linux: a zombie has exited; only its exit status is left
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def release_dead_leases(store: Store, *, actor: str | None = None) -> int:
    """Put back in the queue every job leased by a process of this host that no longer runs.

    Call it when a worker starts and while it waits: a crashed run's jobs are then drafted at once
    instead of after their lease. Race-free with `pipelines.store.jobs.claim` (row locks; SQLite
    holds the write lock for the transaction).

    Args:
        store: the open store.
        actor: who releases (audit actor); default this process's `owner_id`.

    Returns:
        How many jobs were released.
    """
    host = this_host()
    actor = actor or owner_id("medvlm")
    stmt = (select(JobRecord).where(JobRecord.state == "leased", JobRecord.lease_owner.like(f"%@{host}#%"))
            .with_for_update(skip_locked=True))
    released = 0
    with store.transaction() as session:
        for rec in session.scalars(stmt).all():
            owner = owner_process(rec.lease_owner)
            if owner is None or owner[0] != host or pid_alive(owner[1]):
                continue
            previous, now = rec.lease_owner, utcnow()
            rec.state, rec.lease_owner, rec.lease_expires_at, rec.updated_at = "queued", None, None, now
            append_event(session, actor=actor, action="job.release", object_type="job", object_id=str(rec.id),
                         details={"reason": "owner_process_gone", "previous_owner": previous,
                                  "attempt": rec.attempts})
            released += 1
    return released
