"""Dashboard log-in throttling and temporary lockout, per user name and per client, all audited.

Every failed log-in counts against two keys, the typed user name and the client (browser address),
both pseudonymised with the store's audit key (``user:h:...``, ``client:h:...``: never the typed
text, which may be a password typed into the wrong field, a UID or ``A^B``). After
``throttle_after`` failures a key must wait before its next attempt (doubling, capped); an attempt
made too early is refused without checking the password and still counts. After ``lock_after``
failures of a user name, or ``client_lock_after`` of a client, the key is locked for
``lock_seconds``: every attempt is refused, the right password too, until the lock expires or an
admin unlocks the user name (`unlock_user`). A successful log-in clears the user name's count
(not the client's: one valid account must not reset a client that guesses others). Failures older
than ``forget_after_s`` are forgotten.

Audit events: ``user.login`` (``refused``, with the reason and counts), ``user.lock`` when a key
locks, ``user.unlock`` by an admin. The password never reaches this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from compliance.audit import append_event
from compliance.clock import as_utc
from pipelines.errors import PipelineError
from pipelines.store.db import Store
from pipelines.store.models import LoginGuard, utcnow

UNAUTHENTICATED = "unauthenticated"
"""The audit actor of a refused log-in (who typed it is unknown)."""


class LoginPolicyError(PipelineError, ValueError):
    """A login policy setting is out of range (the message names it)."""


@dataclass(frozen=True)
class LoginPolicy:
    """Throttling and lockout settings (defaults follow common clinical-system practice)."""

    throttle_after: int = 3
    """Failures of a key after which each further attempt must wait."""
    base_delay_s: float = 1.0
    """Wait after ``throttle_after`` failures; doubles with each further failure."""
    max_delay_s: float = 30.0
    """Cap of the wait."""
    lock_after: int = 10
    """Failures of one user name that lock it (NIST SP 800-63B allows up to 100; 10 is usual)."""
    client_lock_after: int = 30
    """Failures from one client, over any user names, that lock the client."""
    lock_seconds: float = 900.0
    """How long a lock lasts unless an admin lifts it."""
    forget_after_s: float = 3600.0
    """A key with no failure for this long starts again from zero."""

    def __post_init__(self) -> None:
        for name in ("throttle_after", "lock_after", "client_lock_after"):
            if getattr(self, name) < 1:
                raise LoginPolicyError(f"login policy {name} must be >= 1, got {getattr(self, name)}")
        for name in ("base_delay_s", "max_delay_s", "lock_seconds", "forget_after_s"):
            if getattr(self, name) < 0:
                raise LoginPolicyError(f"login policy {name} must be >= 0, got {getattr(self, name)}")

    def delay_s(self, failures: int) -> float:
        """Seconds a key with `failures` failures must wait after its last one."""
        if failures < self.throttle_after:
            return 0.0
        return min(self.base_delay_s * 2 ** (failures - self.throttle_after), self.max_delay_s)


@dataclass(frozen=True)
class LoginRefusal:
    """Why an attempt is refused before the password is checked."""

    reason: str
    """``locked`` or ``throttled``."""
    retry_after_s: float
    """Seconds until an attempt can be made again."""

    @property
    def message(self) -> str:
        """What the log-in page shows (says nothing about whether the user exists)."""
        wait = max(1, round(self.retry_after_s))
        if self.reason == "locked":
            return (f"Too many failed log-ins: log-in is locked for {wait // 60 or 1} min. "
                    "An administrator can unlock it.")
        return f"Too many failed log-ins: wait {wait} s before trying again."


def _text(value: str) -> str:
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def user_key(store: Store, username: str) -> str:
    """The pseudonymous key of a typed user name (trimmed; never stored in clear)."""
    return "user:" + store.pseudonym(_text(username.strip()))


def client_key(store: Store, client: str | None) -> str:
    """The pseudonymous key of a client address (``unknown`` when the server cannot tell)."""
    return "client:" + store.pseudonym(_text(client or "unknown"))


def _state(row: LoginGuard | None, policy: LoginPolicy, now: datetime) -> tuple[int, LoginRefusal | None]:
    """(failures still counted, refusal in force) of one key."""
    if row is None:
        return 0, None
    locked, last = as_utc(row.locked_until), as_utc(row.last_failure_at)
    if locked is not None and locked > now:
        return row.failures, LoginRefusal("locked", (locked - now).total_seconds())
    if last is None or (now - last).total_seconds() > policy.forget_after_s or locked is not None:
        return 0, None  # forgotten, or a lock that has expired: start again
    wait = policy.delay_s(row.failures) - (now - last).total_seconds()
    return row.failures, (LoginRefusal("throttled", wait) if wait > 0 else None)


def _worst(*refusals: LoginRefusal | None) -> LoginRefusal | None:
    found = [r for r in refusals if r is not None]
    locked = [r for r in found if r.reason == "locked"]
    pool = locked or found
    return max(pool, key=lambda r: r.retry_after_s) if pool else None


def login_refusal(store: Store, username: str, client: str | None, policy: LoginPolicy,
                  now: datetime | None = None) -> LoginRefusal | None:
    """The refusal in force for this user name and client, or None when an attempt may be checked."""
    now = as_utc(now) or utcnow()
    keys = (user_key(store, username), client_key(store, client))
    with store.transaction() as session:
        rows = {r.key: r for r in session.scalars(select(LoginGuard).where(LoginGuard.key.in_(keys))).all()}
        return _worst(*(_state(rows.get(k), policy, now)[1] for k in keys))


def record_failure(store: Store, username: str, client: str | None, policy: LoginPolicy, *,
                   reason: str = "bad_credentials", now: datetime | None = None) -> LoginRefusal | None:
    """Count a refused attempt against the user name and the client, lock them at their limit, audit.

    Args:
        username: what was typed (pseudonymised here).
        client: the client's address, or None.
        policy: the limits.
        reason: ``bad_credentials``, ``throttled`` or ``locked`` (a locked key is not counted again,
            so that guessing cannot extend a lock forever).
        now: the current time (tests pass a clock).

    Returns:
        The refusal in force after this attempt (None when the next attempt may be made at once).
    """
    now = as_utc(now) or utcnow()
    ukey, ckey = user_key(store, username), client_key(store, client)
    refusals = []
    with store.transaction() as session:
        counts = {}
        for key, kind, limit in ((ukey, "user", policy.lock_after), (ckey, "client", policy.client_lock_after)):
            row = session.get(LoginGuard, key, with_for_update=True)
            failures, refusal = _state(row, policy, now)
            if refusal is None or refusal.reason != "locked":
                if row is None:
                    row = LoginGuard(key=key, kind=kind, failures=0)
                    session.add(row)
                failures += 1
                row.failures, row.last_failure_at, row.locked_until = failures, now, None
                if failures >= limit:
                    row.locked_until = now + timedelta(seconds=policy.lock_seconds)
                    append_event(session, actor=UNAUTHENTICATED, action="user.lock", object_type=kind,
                                 object_id=key, outcome="refused",
                                 details={"failures": failures, "lock_seconds": policy.lock_seconds})
                refusal = _state(row, policy, now)[1]
            counts[kind] = failures
            refusals.append(refusal)
        append_event(session, actor=UNAUTHENTICATED, action="user.login", object_type="user", object_id=ukey,
                     outcome="refused", details={"reason": reason, "client": ckey, "user_failures": counts["user"],
                                                 "client_failures": counts["client"]})
    return _worst(*refusals)


def clear_user_failures(store: Store, username: str) -> None:
    """Forget the user name's failures after a successful log-in (the client's count stays)."""
    with store.transaction() as session:
        session.execute(delete(LoginGuard).where(LoginGuard.key == user_key(store, username)))


def unlock_user(store: Store, username: str, *, admin: str) -> bool:
    """Lift the lock (and the failure count) of a user name; audited as ``user.unlock`` by `admin`.

    Returns:
        True when the user name had failures or a lock to lift.
    """
    key = user_key(store, username)
    with store.transaction() as session:
        removed = session.execute(delete(LoginGuard).where(LoginGuard.key == key)).rowcount
        append_event(session, actor=admin, action="user.unlock", object_type="user", object_id=key,
                     details={"had_failures": bool(removed)})
    return bool(removed)


def locked_keys(store: Store, now: datetime | None = None) -> list[tuple[str, str, datetime]]:
    """``(kind, pseudonymous key, locked until)`` of every lock in force, soonest first (admin view)."""
    now = as_utc(now) or utcnow()
    with store.transaction() as session:
        rows = session.scalars(select(LoginGuard).where(LoginGuard.locked_until.is_not(None))).all()
        out = [(r.kind, r.key, as_utc(r.locked_until)) for r in rows]
    return sorted((o for o in out if o[2] > now), key=lambda o: o[2])
