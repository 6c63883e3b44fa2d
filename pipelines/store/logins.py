"""Log-ins to the review dashboard, recorded in the audit log (never the password)."""

from __future__ import annotations

from compliance.audit import append_event
from pipelines.store.db import Store


def record_login(store: Store, username: str, role: str) -> None:
    """Record a successful log-in in the audit log.

    Args:
        store: the review store.
        username: who logged in.
        role: their role (kept in the event's details).
    """
    with store.transaction() as session:
        append_event(session, actor=username, action="user.login", object_type="user", object_id=username,
                     details={"role": role})


def record_failed_login(store: Store, username: str) -> None:
    """Record a refused log-in (unknown user or wrong password) under the name that was typed.

    Args:
        store: the review store.
        username: the typed name (trimmed to 128 characters; ``(empty)`` when blank).
    """
    name = username.strip()[:128] or "(empty)"
    with store.transaction() as session:
        append_event(session, actor=name, action="user.login", object_type="user", object_id=name,
                     outcome="refused", details={})
