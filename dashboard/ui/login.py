"""Log-in: ``st.login`` (OIDC) when secrets have ``[auth]``, else the local users file."""

from __future__ import annotations

import streamlit as st

from dashboard import auth, logic


@st.cache_resource(show_spinner=False)
def _users(path: str) -> dict[str, auth.User]:
    return auth.load_users(path)


def current_user(store, sess: logic.DashboardSession) -> auth.User | None:  # noqa: ANN001
    """Return the logged-in user, or render the log-in form and return None."""
    if sess.user is not None:
        return sess.user
    if auth.oidc_configured(st.secrets):
        if not st.user.is_logged_in:
            st.title("medvlm review")
            st.button("Log in with single sign-on", on_click=st.login, type="primary")
            return None
        users = _users(str(auth.users_file_path()))
        sess.user = auth.oidc_user(users, st.user.get("email"), st.user.get("name"))
        logic.audit_login(store, sess.user)
        return sess.user
    try:
        users = _users(str(auth.users_file_path()))
    except auth.AuthError as exc:
        st.error(str(exc))
        return None
    st.title("medvlm review")
    st.caption("AI-drafted chest radiograph reports. Drafts are suggestions; a radiologist signs the report.")
    with st.form("login"):
        username = st.text_input("Username", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        user = auth.authenticate(users, username.strip(), password)
        if user is None:
            logic.audit_failed_login(store, username)
            st.error("Unknown user or wrong password.")
            return None
        sess.user = user
        logic.audit_login(store, user)
        st.rerun()
    return None


def logout(sess: logic.DashboardSession) -> None:
    """End the session (and the OIDC session when there is one)."""
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if auth.oidc_configured(st.secrets) and st.user.is_logged_in:
        st.logout()
    st.rerun()
