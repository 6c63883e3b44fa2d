"""Streamlit entry of the medvlm review dashboard: ``streamlit run dashboard/app.py``.

This file only renders (STYLE rule 21): it opens the store named by ``$MEDVLM_DATABASE_URL``,
asks who the user is, and hands the page to ``dashboard.ui``. The store is a cached resource
passed to every page, never a module-level global. An unexpected error never shows a stack trace:
the page says what happened with an error id, and the server log has the details without PHI
(`dashboard.logic.report_error`).
"""

from __future__ import annotations

import streamlit as st

from dashboard import logic
from dashboard.ui import ask, login, model_page, study, worklist


@st.cache_resource(show_spinner=False)
def _store(url: str):  # noqa: ANN202 - pipelines.store.Store
    from pipelines.store import open_store

    return open_store(url)


def _sidebar(sess: logic.DashboardSession, user) -> None:  # noqa: ANN001
    with st.sidebar:
        st.markdown(f"**{logic.escape_markdown(user.display_name)}**  \n{user.role}")
        st.divider()
        for page in logic.PAGES:
            needs_study = page != "Worklist"
            if st.button(page, key=f"nav_{page}", type="primary" if sess.page == page else "secondary",
                         disabled=needs_study and sess.study_uid is None, width="stretch"):
                sess.page = page
                st.rerun()
        st.divider()
        if st.button("Log out", key="logout"):
            login.logout(sess)


def main() -> None:
    """Render one run of the app; any error becomes a typed error page."""
    st.set_page_config(page_title="medvlm review", page_icon=":material/radiology:", layout="wide")
    try:
        _render()
    except Exception as exc:  # noqa: BLE001 - no stack trace ever reaches a client (st.rerun is a BaseException)
        st.error(logic.error_message(logic.report_error(exc)))


def _render() -> None:
    sess = logic.init_session(st.session_state)
    from pipelines.store.db import resolve_database_url

    store = _store(resolve_database_url())
    user = login.current_user(store, sess)
    if user is None:
        return
    _sidebar(sess, user)
    with st.sidebar:
        login.admin_unlock(store, user)
    if sess.notice:
        st.success(sess.notice)
        sess.notice = None
    if sess.page == "Worklist" or sess.study_uid is None:
        worklist.render(store, sess, user)
    elif sess.page == "Study":
        study.render(store, sess, user)
    elif sess.page == "Ask":
        ask.render(store, sess, user)
    else:
        model_page.render(store, sess, user)


main()
