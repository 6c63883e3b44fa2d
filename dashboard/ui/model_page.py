"""Model page: which model version drafted the open study, its evaluation figures and model card."""

from __future__ import annotations

import streamlit as st

from dashboard import logic
from dashboard.logic.model import audit_alarm_for


@st.cache_data(show_spinner="Asking MLflow…", ttl=300)
def _info(model_version: str) -> logic.ModelInfo:
    return logic.model_info(model_version)


def render(store, sess: logic.DashboardSession, user) -> None:  # noqa: ANN001
    """Render the model information of the open study's draft."""
    detail = logic.load_study(store, sess.study_uid)
    st.header("Model")
    if alarm := audit_alarm_for(store, user.role):  # admins only; the sentence holds no PHI
        st.error(alarm)
    version = detail.draft.model_version if detail.draft is not None else ""
    st.markdown(f"This study was drafted by model **{logic.escape_markdown(version or 'none')}**.")
    st.caption("AI drafts are suggestions for a radiologist to review; they are not a diagnosis.")
    info = _info(version)
    if not info.available:
        st.info(info.message)
        return
    if info.metrics:
        st.subheader("Evaluation")
        st.dataframe({"metric": list(info.metrics), "value": list(info.metrics.values())}, hide_index=True)
    if info.tags:
        with st.expander("Registry tags"):
            st.dataframe({"tag": list(info.tags), "value": list(info.tags.values())}, hide_index=True)
    st.subheader("Model card")
    if info.model_card:
        st.markdown(info.model_card)
    else:
        st.info("No model card was logged with this model version.")
