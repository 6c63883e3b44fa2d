"""Ask page: questions to the model about the open study, answers streamed as they are generated;
every Q&A is stored with the study."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from dashboard import logic

if TYPE_CHECKING:
    from medvlm.build import MedVLM


@st.cache_resource(show_spinner="Loading the model…", max_entries=1)
def cached_bundle(model: str, _store=None) -> MedVLM:  # noqa: ANN001 - `_store` is not hashed by Streamlit
    """The configured model, loaded once per process (the Study page's image retrieval shares it);
    a load of trusted remote code is recorded in `_store`'s audit log."""
    return logic.load_model(model, _store)


def render(store, sess: logic.DashboardSession, user) -> None:  # noqa: ANN001
    """Render the chat about the open study."""
    detail = logic.load_study(store, sess.study_uid)
    st.header(f"Ask about study {logic.escape_markdown(detail.label)}")
    for qa in detail.questions:
        with st.chat_message("user"):
            st.markdown(f"{logic.escape_markdown(qa.question)}  \n:gray[{logic.escape_markdown(qa.user)}]")
        with st.chat_message("assistant"):
            st.markdown(logic.escape_markdown(qa.answer))
    model = logic.configured_model()
    if model is None:
        st.info("No model is configured for questions, so the model cannot be asked here. "
                "Set MEDVLM_MODEL to a checkpoint folder, a Hugging Face model folder or a models:/ URI and "
                "restart the dashboard.")
        st.chat_input("Ask a question about this study", key="ask_input", disabled=True)
        return
    question = st.chat_input("Ask a question about this study", key="ask_input", max_chars=500)
    if not question:
        return
    with st.chat_message("user"):
        st.markdown(logic.escape_markdown(question))
    try:
        bundle = cached_bundle(model, store)
        images = logic.model_images(detail, size=bundle.config.image_size)
    except Exception as exc:  # noqa: BLE001 - show a plain message; never the exception text (may hold paths)
        st.error(f"The model could not answer ({type(exc).__name__}).")
        return
    result = logic.StreamedAnswer()
    with st.chat_message("assistant"):
        try:
            st.write_stream(logic.escape_markdown(piece) for piece in
                            logic.stream_model_answer(bundle, images, question, detail.questions, result))
        except Exception as exc:  # noqa: BLE001 - as above; a partial answer is not stored
            st.error(f"The model could not answer ({type(exc).__name__}).")
            return
        confidence = "" if result.confidence is None else f"confidence {result.confidence:.2f} · "
        st.caption(f"{confidence}model {logic.escape_markdown(model)}")
    logic.record_question(store, user, detail.study_uid, question, result.text, model)
