"""The browser session's state, declared once (STYLE rule 21), and how a session starts and ends.

A session carries a random token (its identity in medvlm: a new one at log-in and at log-out, so a
token seen before log-in is worth nothing after it) and the time of its last request (idle
timeout). Log-in goes through `attempt_login`: throttling and lockout per user name and per client
(`pipelines.store.login_guard`), every refusal audited without the password or the typed name.
The token is never logged.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from dashboard.auth import User, authenticate
from pipelines.store import Store, login_guard, logins
from pipelines.store.login_guard import LoginPolicy
from pipelines.store.worklist import WorklistFilters

PAGES = ("Worklist", "Study", "Ask", "Model")
SESSION_KEY = "medvlm_session"
IDLE_ENV = "MEDVLM_IDLE_TIMEOUT_S"
IDLE_TIMEOUT_S = 900.0
"""Idle minutes before a logged-in session ends: 15, the usual lock time of a reporting workstation."""
BAD_CREDENTIALS = "Unknown user or wrong password."


def new_token() -> str:
    """A fresh, unguessable session token (256 bits)."""
    return secrets.token_urlsafe(32)


@dataclass
class DashboardSession:
    """Everything one browser session keeps between reruns (the only session state).

    Attributes:
        user: the logged-in user, or None.
        page: the page shown, one of ``PAGES``.
        study_uid: the study open on the Study/Ask pages.
        filters: worklist filters.
        notice: a confirmation shown once after an action (e.g. "Signed version 3").
        edit_generation: bumped after each saved edit so the editor widgets reload.
        token: the session's identity; replaced at log-in and log-out. Never logged or shown.
        last_active: wall-clock time of the last request (idle timeout).
    """

    user: User | None = None
    page: str = "Worklist"
    study_uid: str | None = None
    filters: WorklistFilters = field(default_factory=WorklistFilters)
    notice: str | None = None
    edit_generation: int = 0
    token: str = field(default_factory=new_token, repr=False)
    last_active: float = field(default_factory=time.time)


def init_session(state: MutableMapping[str, Any]) -> DashboardSession:
    """Return the session's ``DashboardSession``, creating it on first use.

    Args:
        state: ``st.session_state`` (or any mutable mapping in tests).

    Returns:
        The one ``DashboardSession`` stored under ``SESSION_KEY``.
    """
    if SESSION_KEY not in state:
        state[SESSION_KEY] = DashboardSession()
    return state[SESSION_KEY]


def _reset(state: MutableMapping[str, Any], **values: Any) -> DashboardSession:
    for key in list(state.keys()):  # widget values included: nothing of the old session survives
        del state[key]
    state[SESSION_KEY] = DashboardSession(**values)
    return state[SESSION_KEY]


def start_session(state: MutableMapping[str, Any], user: User) -> DashboardSession:
    """A new session (new token, empty state) for `user`, after a successful log-in."""
    return _reset(state, user=user)


def end_session(state: MutableMapping[str, Any], notice: str | None = None) -> DashboardSession:
    """Log out: empty the state and start an anonymous session with a new token."""
    return _reset(state, notice=notice)


def idle_timeout_s(env: Mapping[str, str] | None = None) -> float:
    """``$MEDVLM_IDLE_TIMEOUT_S`` or `IDLE_TIMEOUT_S` (a bad value falls back to the default)."""
    value = (os.environ if env is None else env).get(IDLE_ENV, "")
    try:
        return float(value) if value and float(value) > 0 else IDLE_TIMEOUT_S
    except ValueError:
        return IDLE_TIMEOUT_S


def touch(sess: DashboardSession, *, now: float | None = None, timeout_s: float | None = None) -> bool:
    """Record a request; False when the logged-in session had been idle too long (the caller logs out)."""
    now = time.time() if now is None else now
    timeout = idle_timeout_s() if timeout_s is None else timeout_s
    expired = sess.user is not None and now - sess.last_active > timeout
    sess.last_active = now
    return not expired


@dataclass(frozen=True)
class LoginResult:
    """The outcome of one log-in attempt: the user, or the message to show."""

    user: User | None
    message: str = ""


def attempt_login(store: Store, users: Mapping[str, User], username: str, password: str, *,
                  client: str | None, policy: LoginPolicy | None = None, now: Any = None) -> LoginResult:
    """Check a log-in with throttling and lockout; audit the outcome (never the password).

    A throttled or locked user name or client is refused before the password is checked. The
    message does not say whether the user exists.

    Args:
        store: the review store.
        users: the configured users.
        username: what was typed (pseudonymised before anything is stored).
        password: what was typed.
        client: the client's address (``st.context.ip_address``), or None.
        policy: limits (default `LoginPolicy()`).
        now: the current time (a UTC datetime; tests pass a clock).

    Returns:
        The result.
    """
    policy = policy or LoginPolicy()
    name = username.strip()
    refusal = login_guard.login_refusal(store, name, client, policy, now)
    if refusal is not None:
        after = login_guard.record_failure(store, name, client, policy, reason=refusal.reason, now=now)
        return LoginResult(None, (after or refusal).message)
    user = authenticate(dict(users), name, password)
    if user is None:
        refusal = login_guard.record_failure(store, name, client, policy, now=now)
        locked = refusal is not None and refusal.reason == "locked"
        return LoginResult(None, refusal.message if locked else BAD_CREDENTIALS)
    login_guard.clear_user_failures(store, name)
    logins.record_login(store, user.username, user.role)
    return LoginResult(user)


def unlock_user(store: Store, admin: User, username: str) -> str:
    """Admin action: lift a user name's lock. Returns the confirmation to show.

    Raises:
        PermissionError: `admin` is not an admin.
    """
    if admin.role != "admin":
        raise PermissionError("only an admin can unlock a user")
    had = login_guard.unlock_user(store, username.strip(), admin=admin.username)
    return "Unlocked." if had else "That user name had no failed log-ins to clear."
