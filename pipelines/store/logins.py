"""Log-ins to the review dashboard, recorded in the audit log (never the password)."""

from __future__ import annotations

from compliance.audit import append_event
from pipelines.store.db import Store
from pipelines.store.login_guard import UNAUTHENTICATED, user_key


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
    """Record a refused log-in (unknown user or wrong password) under the typed name's pseudonym.

    The typed text is never stored: it may be a password typed into the wrong field, or shaped like
    a UID or a person name (``A^B``), which the audit log refuses. The dashboard counts failures for
    throttling with `pipelines.store.login_guard.record_failure`, which writes this same event.

    Args:
        store: the review store.
        username: the typed name.
    """
    with store.transaction() as session:
        append_event(session, actor=UNAUTHENTICATED, action="user.login", object_type="user",
                     object_id=user_key(store, username), outcome="refused", details={"reason": "bad_credentials"})
