"""Worklist page: counts, filters, sorting, one click to open a study."""

from __future__ import annotations

import streamlit as st

from dashboard import logic

_SORT_LABELS = {"priority": "Priority", "received_at": "Received", "flags": "Flags",
                "min_confidence": "Lowest confidence", "status": "Status"}


def open_study_page(store, sess: logic.DashboardSession, user, study_uid: str) -> None:  # noqa: ANN001
    """Open a study on the Study page (audited as ``study.open``) and rerun."""
    sess.study_uid = study_uid
    sess.page = "Study"
    logic.open_study(store, user, study_uid)
    st.rerun()


def _filters() -> logic.WorklistFilters:
    c1, c2, c3, c4, c5 = st.columns([2, 2, 2, 1.2, 1.6])
    statuses = c1.multiselect("Study status", logic.STUDY_STATUSES, key="wl_status")
    review = c2.multiselect("Report", logic.REVIEW_STATES, default=["unreviewed", "draft"], key="wl_review")
    dates = c3.date_input("Received between", value=(), key="wl_dates")
    min_priority = c4.number_input("Min. priority", value=0, step=1, key="wl_priority")
    flagged = c5.selectbox("Consistency flags", logic.FLAGGED_CHOICES, key="wl_flags")
    s1, s2, _ = st.columns([2, 1, 5])
    sort_by = s1.selectbox("Sort by", logic.SORT_COLUMNS, format_func=_SORT_LABELS.get, key="wl_sort")
    descending = s2.toggle("Descending", value=True, key="wl_desc")
    dates = tuple(dates) if isinstance(dates, list | tuple) else (dates,)
    return logic.WorklistFilters(
        statuses=tuple(statuses), review=tuple(review),
        date_from=dates[0] if len(dates) >= 1 else None, date_to=dates[1] if len(dates) >= 2 else None,
        min_priority=int(min_priority), flagged=flagged, sort_by=sort_by, descending=bool(descending),
    )


def render(store, sess: logic.DashboardSession, user) -> None:  # noqa: ANN001
    """Render the worklist."""
    st.header("Worklist")
    counts = logic.worklist_counts(store)
    cols = st.columns(5)
    for col, (label, key) in zip(cols, [("To read", "drafted"), ("Signed", "signed"), ("Queued", "queued"),
                                         ("Quarantined", "quarantined"), ("Failed", "failed")], strict=True):
        col.metric(label, counts.get(key, 0))
    sess.filters = _filters()
    table, total = logic.load_worklist(store, sess.filters)
    shown = len(table)
    st.caption(f"{total} studies match; showing {shown}. Click a row to open the study.")
    if shown:
        if st.button(f"Open first study ({table.loc[0, 'study']})", key="open_first", type="primary"):
            open_study_page(store, sess, user, str(table.loc[0, "study_uid"]))
        view = table.drop(columns=["study_uid"])
        view["received_at"] = view["received_at"].dt.tz_convert(None)  # shown as UTC (column label)
        view["model_version"] = view["model_version"].map(logic.short_model_version)
        event = st.dataframe(
            view, key="wl_table", hide_index=True, on_select="rerun", selection_mode="single-row",
            column_config={
                "study": st.column_config.TextColumn("Study"),
                "status": st.column_config.TextColumn("Status"),
                "review": st.column_config.TextColumn("Report"),
                "priority": st.column_config.NumberColumn("Priority"),
                "received_at": st.column_config.DatetimeColumn("Received (UTC)", format="YYYY-MM-DD HH:mm"),
                "flags": st.column_config.NumberColumn("Flags", help="consistency flags in the AI draft"),
                "min_confidence": st.column_config.ProgressColumn(
                    "Lowest sentence confidence", min_value=0.0, max_value=1.0, format="%.2f"),
                "model_version": st.column_config.TextColumn("Model", help="checkpoint content hash (first 12)"),
            },
        )
        rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
        if rows:
            uid = str(table.loc[rows[0], "study_uid"])
            st.session_state.pop("wl_table", None)  # a stale selection must not reopen it on return
            open_study_page(store, sess, user, uid)
    else:
        st.info("No study matches these filters.")
