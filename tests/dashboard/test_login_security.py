"""Dashboard log-in like a clinical system: throttling and lockout per user name and per client, admin
unlock, a new session identity at log-in and log-out, idle timeout, odd user names audited without a
crash, and a typed error page (never a stack trace) for anything unexpected."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from compliance.audit import read_events
from dashboard import logic
from dashboard.auth import DEFAULT_USERS_FILE, load_users
from pipelines.store import login_guard, open_store
from pipelines.store.login_guard import LoginPolicy

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as s:
        yield s


@pytest.fixture(scope="module")
def users():
    return load_users(DEFAULT_USERS_FILE)  # rad / rad-demo, admin / admin-demo ...


def _events(store, action: str):
    with store.transaction() as session:
        return [e for e in read_events(session, actor="test") if e.action == action]


def test_120_wrong_passwords_are_throttled_then_locked_until_unlock_or_expiry(store, users):
    policy = LoginPolicy()
    outcomes = []
    for i in range(120):  # an attacker hammering at five attempts a second
        result = logic.attempt_login(store, users, "rad", f"guess-{i}", client="10.1.1.1", policy=policy,
                                     now=T0 + timedelta(seconds=0.2 * i))
        assert result.user is None
        outcomes.append(result.message)
    assert outcomes[:3] == [logic.BAD_CREDENTIALS] * 3
    assert any(m.startswith("Too many failed log-ins: wait") for m in outcomes[3:10])  # throttled
    first_lock = next(i for i, m in enumerate(outcomes) if "locked" in m)
    assert first_lock < policy.lock_after
    assert all("locked" in m for m in outcomes[first_lock:])
    # the user name locks at its 10th failure; the client, still guessing, at its 30th
    assert sorted(e.object_type for e in _events(store, "user.lock")) == ["client", "user"]

    later = T0 + timedelta(seconds=30)
    refused = logic.attempt_login(store, users, "rad", "rad-demo", client="10.1.1.1", now=later)
    assert refused.user is None and "locked" in refused.message  # the right password, while locked

    with pytest.raises(PermissionError):
        logic.unlock_user(store, users["rad"], "rad")  # only an admin unlocks
    assert logic.unlock_user(store, users["admin"], "rad") == "Unlocked."
    ok = logic.attempt_login(store, users, "rad", "rad-demo", client="10.1.1.2", now=later)
    assert ok.user is not None and ok.user.username == "rad"

    for i in range(policy.lock_after):  # lock again, then let the lock expire
        logic.attempt_login(store, users, "rad", "nope", client="10.1.1.3", now=later + timedelta(seconds=60 * i))
    locked_at = later + timedelta(seconds=60 * policy.lock_after)
    assert "locked" in logic.attempt_login(store, users, "rad", "rad-demo", client="10.1.1.3",
                                           now=locked_at).message
    expired = locked_at + timedelta(seconds=policy.lock_seconds + 1)
    assert logic.attempt_login(store, users, "rad", "rad-demo", client="10.1.1.3", now=expired).user is not None

    refusals = _events(store, "user.login")
    assert len([e for e in refusals if e.outcome == "refused"]) >= 121
    audit_text = str([(e.actor, e.object_id, e.details) for e in refusals])
    assert "guess-" not in audit_text and "rad-demo" not in audit_text and "10.1.1" not in audit_text
    assert [e.actor for e in _events(store, "user.unlock")] == ["admin"]


def test_one_client_guessing_many_names_is_locked_other_clients_are_not(store, users):
    policy = LoginPolicy()
    for i in range(policy.client_lock_after):
        logic.attempt_login(store, users, f"user{i}", "x", client="203.0.113.7", policy=policy,
                            now=T0 + timedelta(seconds=40 * i))  # slow enough never to be throttled
    now = T0 + timedelta(seconds=40 * policy.client_lock_after)
    blocked = logic.attempt_login(store, users, "rad", "rad-demo", client="203.0.113.7", now=now)
    assert blocked.user is None and "locked" in blocked.message
    assert logic.attempt_login(store, users, "rad", "rad-demo", client="198.51.100.1", now=now).user is not None
    kinds = {kind for kind, _, _ in login_guard.locked_keys(store, now=now)}
    assert kinds == {"client"}


@pytest.fixture
def app_env(seeded_store_url, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("MEDVLM_DATABASE_URL", seeded_store_url)
    monkeypatch.setenv("MEDVLM_USERS_FILE", str(DEFAULT_USERS_FILE))
    monkeypatch.delenv("MEDVLM_MODEL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-mlflow.db'}")
    return seeded_store_url


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(APP), default_timeout=60).run()


def _submit(at, username: str, password: str):
    at.text_input(key="login_user").input(username)
    at.text_input(key="login_password").input(password)
    at.button[0].click().run()
    return at


def _page_text(at) -> str:
    parts = [e.value for kind in ("markdown", "caption", "error", "info", "success", "title") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("name", ["1.2.840.113619.2.55.3.604688119", "Doe^Jane", "A^B", "<script>x</script>"])
def test_odd_user_names_are_refused_audited_and_never_a_traceback(app_env, name):
    at = _submit(_app(), name, "whatever")
    assert not at.exception
    assert [e.value for e in at.error] == [logic.BAD_CREDENTIALS]
    assert "Traceback" not in _page_text(at)
    with open_store(app_env) as store:
        events = _events(store, "user.login")
        key = login_guard.user_key(store, name)
    assert [(e.actor, e.object_id, e.outcome) for e in events] == [("unauthenticated", key, "refused")]
    assert name not in str([(e.actor, e.object_id, e.details) for e in events])


def test_session_identity_changes_at_login_and_logout_and_is_never_logged(app_env, caplog):
    caplog.set_level(logging.DEBUG)
    at = _app()
    before = at.session_state[logic.SESSION_KEY].token
    at = _submit(at, "rad", "rad-demo")
    assert not at.exception
    after = at.session_state[logic.SESSION_KEY]
    assert after.user is not None and after.token != before
    at.button(key="logout").click().run()
    out = at.session_state[logic.SESSION_KEY]
    assert out.user is None and out.token not in (before, after.token)
    assert at.text_input(key="login_user").value == ""  # nothing of the old session survives
    for token in (before, after.token, out.token):
        assert token not in caplog.text


def test_idle_session_is_logged_out(app_env):
    at = _submit(_app(), "rad", "rad-demo")
    sess = at.session_state[logic.SESSION_KEY]
    old_token = sess.token
    sess.last_active -= logic.session.idle_timeout_s() + 1
    at.run()
    now = at.session_state[logic.SESSION_KEY]
    assert now.user is None and now.token != old_token
    assert any("inactivity" in i.value for i in at.info)
    assert logic.touch(now, now=now.last_active + 10, timeout_s=5)  # anonymous sessions never expire


def test_admin_unlocks_a_locked_user_from_the_sidebar(app_env, users):
    with open_store(app_env) as store:
        for i in range(LoginPolicy().lock_after):
            logic.attempt_login(store, users, "rad", "bad", client="10.9.9.9",
                                now=datetime.now(UTC) - timedelta(seconds=60 * (20 - i)))
    at = _submit(_app(), "rad", "rad-demo")
    assert "locked" in at.error[0].value
    admin = _submit(_app(), "admin", "admin-demo")
    admin.text_input(key="unlock_user").input("rad")
    admin.button(key="unlock_button").click().run()
    assert not admin.exception and [s.value for s in admin.success] == ["Unlocked."]
    assert _submit(_app(), "rad", "rad-demo").session_state[logic.SESSION_KEY].user.username == "rad"


def test_unexpected_error_shows_an_error_id_and_logs_no_detail(app_env, monkeypatch, caplog):
    secret = "s3cret-pw"
    monkeypatch.setenv("MEDVLM_DATABASE_URL", f"postgresql+psycopg://u:{secret}@127.0.0.1:9/nowhere?connect_timeout=1")
    caplog.set_level(logging.ERROR, logger="medvlm.dashboard")
    at = _app()
    assert not at.exception
    (error,) = at.error
    assert "error id" in error.value and secret not in _page_text(at) and "Traceback" not in _page_text(at)
    error_id = error.value.split("error id ")[1].split(")")[0]
    assert error_id in caplog.text and secret not in caplog.text


def test_users_file_path_is_escaped_before_markdown(app_env, tmp_path, monkeypatch):
    odd = tmp_path / "**bold** [link](http://x) $x$"
    monkeypatch.setenv("MEDVLM_USERS_FILE", str(odd / "users.yaml"))
    at = _app()
    assert not at.exception
    (error,) = at.error
    assert "\\*\\*bold\\*\\* \\[link\\]\\(http" in error.value
