"""Ask page: questions to the model about the open study; every Q&A is stored with the study."""

from __future__ import annotations

import streamlit as st

from dashboard import logic


@st.cache_resource(show_spinner="Loading the model…", max_entries=1)
def _bundle(model: str):  # noqa: ANN202 - medvlm MedVLM
    return logic.load_model(model)


def render(store, sess: logic.DashboardSession, user) -> None:  # noqa: ANN001
    """Render the chat about the open study."""
    with store.transaction() as session:
        detail = logic.load_study(session, sess.study_uid)
    st.header(f"Ask about study {logic.escape_markdown(detail.label)}")
    for qa in detail.questions:
        with st.chat_message("user"):
            st.markdown(f"{logic.escape_markdown(qa.question)}  \n:gray[{logic.escape_markdown(qa.user)}]")
        with st.chat_message("assistant"):
            st.markdown(logic.escape_markdown(qa.answer))
    model = logic.configured_model()
    if model is None:
        st.info("No model is configured for questions, so the model cannot be asked here. "
                "Set MEDVLM_MODEL to a checkpoint folder or a models:/ URI and restart the dashboard.")
        st.chat_input("Ask a question about this study", key="ask_input", disabled=True)
        return
    question = st.chat_input("Ask a question about this study", key="ask_input", max_chars=500)
    if not question:
        return
    with st.chat_message("user"):
        st.markdown(logic.escape_markdown(question))
    try:
        bundle = _bundle(model)
        images = logic.model_images(detail, size=bundle.config.image_size)
        answer = logic.ask_model(bundle, images, question, detail.questions)
    except Exception as exc:  # noqa: BLE001 - show a plain message; never the exception text (may hold paths)
        st.error(f"The model could not answer ({type(exc).__name__}).")
        return
    with st.chat_message("assistant"):
        st.write_stream(logic.escape_markdown(w) for w in logic.word_stream(answer.text))
        st.caption(f"confidence {answer.confidence:.2f} · model {logic.escape_markdown(model)}")
    logic.record_question(store, user, detail.study_uid, question, answer.text, model)
