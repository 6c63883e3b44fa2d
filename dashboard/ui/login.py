"""Log-in: ``st.login`` (OIDC) when secrets have ``[auth]``, else the local users file; log-out; admin unlock.

Rendering only: throttling, lockout, session rotation and the idle timeout are `dashboard.logic`
functions (``attempt_login``, ``start_session``, ``end_session``, ``touch``, ``unlock_user``).
"""

from __future__ import annotations

import streamlit as st

from dashboard import auth, logic


@st.cache_resource(show_spinner=False)
def _users(path: str) -> dict[str, auth.User]:
    return auth.load_users(path)


def _client() -> str | None:
    """The client's address as the server sees it (None when unknown, e.g. in AppTest)."""
    try:
        return st.context.ip_address
    except Exception:  # noqa: BLE001 - not available outside a browser session
        return None


def current_user(store, sess: logic.DashboardSession) -> auth.User | None:  # noqa: ANN001
    """Return the logged-in user, or render the log-in form and return None."""
    if sess.user is not None:
        if logic.touch(sess):
            return sess.user
        logout(sess, notice="Your session ended after a period of inactivity; log in again.")
    if auth.oidc_configured(st.secrets):
        if not st.user.is_logged_in:
            st.title("medvlm review")
            st.button("Log in with single sign-on", on_click=st.login, type="primary")
            return None
        users = _users(str(auth.users_file_path()))
        user = auth.oidc_user(users, st.user.get("email"), st.user.get("name"))
        logic.audit_login(store, user)
        logic.start_session(st.session_state, user)
        st.rerun()
    try:
        users = _users(str(auth.users_file_path()))
    except auth.AuthError as exc:
        st.error(logic.escape_markdown(str(exc)))  # names a file path: not our text
        return None
    st.title("medvlm review")
    st.caption("AI-drafted chest radiograph reports. Drafts are suggestions; a radiologist signs the report.")
    if sess.notice:
        st.info(sess.notice)
    with st.form("login"):
        username = st.text_input("Username", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        result = logic.attempt_login(store, users, username, password, client=_client())
        if result.user is None:
            st.error(result.message)
            return None
        logic.start_session(st.session_state, result.user)  # a new session identity for the new user
        st.rerun()
    return None


def logout(sess: logic.DashboardSession, notice: str | None = None) -> None:  # noqa: ARG001
    """End the session (new token, empty state) and the OIDC session when there is one."""
    logic.end_session(st.session_state, notice=notice)
    if auth.oidc_configured(st.secrets) and st.user.is_logged_in:
        st.logout()
    st.rerun()


def admin_unlock(store, user: auth.User) -> None:  # noqa: ANN001
    """Sidebar tool for admins: lift a user name's log-in lock."""
    if user.role != "admin":
        return
    with st.expander("Unlock a user"):
        name = st.text_input("User name to unlock", key="unlock_user")
        if st.button("Unlock", key="unlock_button") and name.strip():
            st.success(logic.unlock_user(store, user, name))
