"""Study page: the Cornerstone3D viewer (frontal, lateral, the prior study (same patient key, earlier date)), the AI draft, editing,
version history with a diff, approve (sign) and reject, similar prior cases (by image with a
configured model, else by shared findings labels), and keyboard shortcuts (next, previous, approve)."""

from __future__ import annotations

import streamlit as st

from dashboard import logic
from dashboard.ui.ask import cached_bundle
from dashboard.ui.worklist import open_study_page
from dashboard.viewer_component import panel, shortcuts

_LEGEND = (":orange-background[orange]: low model confidence (below "
           f"{logic.LOW_CONFIDENCE:.0%}) · :red-background[⚑ red]: part of a consistency flag (listed below)")


def _draft(store, detail: logic.StudyDetail) -> None:  # noqa: ANN001
    draft = detail.draft
    if draft is None:
        st.info("No AI draft for this study yet.")
        return
    st.subheader("AI draft")
    st.caption(f"Drafted by model {logic.escape_markdown(logic.short_model_version(draft.model_version))}. {_LEGEND}")
    st.markdown("**FINDINGS**")
    st.markdown(logic.section_markdown(draft.sentences, "findings", draft.flags)
                or logic.escape_markdown(draft.findings) or "*(none)*")
    st.markdown("**IMPRESSION**")
    st.markdown(logic.section_markdown(draft.sentences, "impression", draft.flags)
                or logic.escape_markdown(draft.impression) or "*(none)*")
    _head_reading(draft.probabilities)
    if draft.flags:
        for flag in draft.flags:
            st.warning(f"**{logic.escape_markdown(flag.code.replace('_', ' '))}**: "
                       f"{logic.escape_markdown(flag.message)} The sentences concerned are marked ⚑.",
                       icon=":material/flag:")
    else:
        st.caption("No consistency flags.")


def _head_reading(probabilities: dict[str, float]) -> None:
    """The image classifier's per-finding probabilities beside the draft (escaped text, never HTML)."""
    if not probabilities:
        return
    from medvlm.heads import probability_rows

    rows = probability_rows(probabilities)
    with st.expander("Image classifier: per-finding probabilities", expanded=True):
        if not rows:
            st.caption("No finding reaches 5%.")
        for name, p, sides in rows:
            side = f" ({logic.escape_markdown(sides)})" if sides else ""
            st.markdown(f"- {logic.escape_markdown(name)}: **{p:.2f}**{side}")
        st.caption("A finding the classifier is sure of that the text omits, or one the text asserts that it "
                   "finds unlikely, is raised as a consistency flag below.")


@st.cache_resource(max_entries=2)
def _embedding_cache(model: str) -> dict:
    """Frontal-image embeddings already computed with ``model`` (file key → vector), per process."""
    return {}


def _similar_by_image(store, detail: logic.StudyDetail, model: str) -> list[logic.SimilarCase] | None:  # noqa: ANN001
    """Cases ranked by image similarity, or None (with a caption saying why) to fall back to labels."""
    frontal = logic.frontal_image(detail.images)
    if frontal is None:
        st.caption("This study has no frontal image, so prior cases are ranked by shared findings instead.")
        return None
    candidates = logic.signed_case_candidates(store)
    if not any(c.study_uid != detail.study_uid for c in candidates):
        st.caption("No other study has a signed report yet, so there is nothing to compare by image.")
        return []
    try:
        bundle = cached_bundle(model, store)
        with st.spinner("Comparing frontal images…"):
            cases = logic.similar_cases_by_image(bundle, detail.study_uid, frontal, candidates,
                                                 cache=_embedding_cache(model))
    except Exception as exc:  # noqa: BLE001 - plain message, never the exception text (may hold paths)
        st.caption(f"Image retrieval failed ({type(exc).__name__}); prior cases are ranked by shared findings "
                   "instead.")
        return None
    st.caption("Ranked by image similarity: cosine similarity of the model's embeddings of the frontal views "
               f"(model {logic.escape_markdown(model)}).")
    if not cases:
        st.caption("No other signed study has a readable frontal image.")
    return cases


def _similar(store, detail: logic.StudyDetail) -> None:  # noqa: ANN001
    draft = detail.draft
    model = logic.configured_model()
    if draft is None and model is None:
        return
    with st.expander("Similar prior cases"):
        cases = _similar_by_image(store, detail, model) if model is not None else None
        if cases is not None:
            for case in cases:
                st.markdown(f"**{logic.escape_markdown(case.label)}** (similarity {case.score:.2f}): "
                            f"{logic.escape_markdown(case.impression)}")
                if case.findings:
                    st.caption(logic.escape_markdown(case.findings))
            return
        if draft is None:
            st.caption("No AI draft to compare findings with.")
            return
        st.caption("Ranked by shared findings labels (CheXpert-style labeller on the report text)"
                   + (", because no model is configured (MEDVLM_MODEL)." if model is None else "."))
        cases = logic.similar_cases(store, detail.study_uid, f"{draft.findings} {draft.impression}")
        if not cases:
            st.caption("No signed report shares findings with this draft.")
        for case in cases:
            st.markdown(f"**{logic.escape_markdown(case.label)}** (shares "
                        f"{logic.escape_markdown(', '.join(case.shared))}): "
                        f"{logic.escape_markdown(case.impression)}")


def _history(detail: logic.StudyDetail) -> None:
    with st.expander(f"Version history ({len(detail.versions)})", expanded=len(detail.versions) > 1):
        for v in reversed(detail.versions):
            line = f"**v{v.version}** · {v.status} · {logic.escape_markdown(v.author)} · " \
                   f"{v.created_at:%Y-%m-%d %H:%M} UTC · hash `{v.content_hash[:12]}`"
            if v.signoff is not None:
                s = v.signoff
                line += (f"  \n:green[Signed by {logic.escape_markdown(s.signer)} ({s.role}) at "
                         f"{s.signed_at:%Y-%m-%d %H:%M} UTC, meaning “{logic.escape_markdown(s.meaning)}”, "
                         f"bound to hash `{s.bound_hash[:12]}`]")
            if v.rejection_reason:
                line += f"  \n:red[Rejected: {logic.escape_markdown(v.rejection_reason)}]"
            st.markdown(line)
        if len(detail.versions) >= 2:
            numbers = [v.version for v in detail.versions]
            c1, c2 = st.columns(2)
            a = c1.selectbox("Compare version", numbers, index=len(numbers) - 2, key=f"diff_a_{detail.study_uid}")
            b = c2.selectbox("with version", numbers, index=len(numbers) - 1, key=f"diff_b_{detail.study_uid}")
            va, vb = detail.versions[numbers.index(a)], detail.versions[numbers.index(b)]
            st.markdown("**FINDINGS** " + logic.diff_markdown(va.findings, vb.findings))
            st.markdown("**IMPRESSION** " + logic.diff_markdown(va.impression, vb.impression))


def _actions(store, sess: logic.DashboardSession, user, detail: logic.StudyDetail) -> None:  # noqa: ANN001
    latest = detail.latest
    if latest is None:
        st.info("No report version yet.")
        return
    st.subheader(f"Report · version {latest.version} ({latest.status})")
    if latest.signoff is not None:
        so = latest.signoff
        st.success(f"Signed by {logic.escape_markdown(so.signer)} ({so.role}) at {so.signed_at:%Y-%m-%d %H:%M} UTC. "
                   "Editing makes a new unsigned version.", icon=":material/verified:")
    elif latest.status == "rejected":
        st.error(f"Rejected: {logic.escape_markdown(latest.rejection_reason or '')}", icon=":material/block:")
    key = f"{detail.study_uid}_{latest.id}"  # a new version gives new widgets, loaded with its text
    findings = st.text_area("FINDINGS", latest.findings, height=160, key=f"ed_findings_{key}")
    impression = st.text_area("IMPRESSION", latest.impression, height=90, key=f"ed_impression_{key}")
    signer = logic.can_sign(user.role)
    c1, c2, c3 = st.columns(3)
    save = c1.button("Save edit", key="btn_save", width="stretch")
    sign = c2.button("Approve and sign", key="btn_sign", type="primary", width="stretch",
                     disabled=not signer or latest.status == "signed" and findings == latest.findings
                     and impression == latest.impression,
                     help=None if signer else "Only radiologists can sign reports.")
    reason = st.text_input("Reason for rejection", key=f"reject_reason_{key}",
                           placeholder="e.g. draft describes the wrong side")
    reject = c3.button("Reject draft", key="btn_reject", width="stretch", disabled=latest.status != "draft")
    try:
        if save:
            v = logic.save_edit(store, user, detail.study_uid, findings, impression, expected_version=latest.version)
            sess.notice = f"Saved version {v.version} (unsigned)."
            st.rerun()
        if sign:
            v = logic.approve_text(store, user, detail.study_uid, findings, impression,
                                   expected_version=latest.version)
            sess.notice = f"Signed version {v.version} as {user.username}."
            st.rerun()
        if reject:
            v = logic.reject(store, user, detail.study_uid, reason, expected_version=latest.version)
            sess.notice = f"Rejected version {v.version}."
            st.rerun()
    except logic.ReviewError as exc:
        st.error(str(exc))


def render(store, sess: logic.DashboardSession, user) -> None:  # noqa: ANN001
    """Render the open study."""
    try:
        detail = logic.load_study(store, sess.study_uid)
    except logic.ReviewError as exc:
        st.error(str(exc))
        return
    st.header(f"Study {logic.escape_markdown(detail.label)}")
    st.caption(f"Status **{detail.status}** · priority {detail.priority} · received "
               f"{detail.received_at:%Y-%m-%d %H:%M} UTC"
               + (f" · indication: {logic.escape_markdown(detail.indication)}" if detail.indication else ""))
    left, right = st.columns([1.6, 1], gap="medium")
    with left:
        event = panel.render(store, detail, keys=True)
    with right:
        _draft(store, detail)
        _actions(store, sess, user, detail)
        _similar(store, detail)
        _history(detail)
    _on_key(store, sess, user, detail, event)


_NONCE_KEY = "vw_key_nonce"  # the last key press handled (the component keeps its value across reruns)


def _editor_text(detail: logic.StudyDetail) -> tuple[str, str]:
    latest = detail.latest
    key = f"{detail.study_uid}_{latest.id}"
    return (st.session_state.get(f"ed_findings_{key}", latest.findings),
            st.session_state.get(f"ed_impression_{key}", latest.impression))


@st.dialog("Approve and sign")
def _confirm_approve(store, sess: logic.DashboardSession, user, detail: logic.StudyDetail) -> None:  # noqa: ANN001
    latest = detail.latest
    findings, impression = _editor_text(detail)
    changed = findings != latest.findings or impression != latest.impression
    st.markdown(f"Sign version {latest.version} of study {logic.escape_markdown(detail.label)} as "
                f"**{logic.escape_markdown(user.username)}**, meaning “{logic.SIGN_MEANING}”?"
                + (" The edited text in the editor is saved as a new version and signed." if changed else ""))
    c1, c2 = st.columns(2)
    if c1.button("Sign", key="dlg_sign", type="primary", width="stretch"):
        try:  # the same call as the page's "Approve and sign" button
            v = logic.approve_text(store, user, detail.study_uid, findings, impression,
                                   expected_version=latest.version)
        except logic.ReviewError as exc:
            st.error(str(exc))
            return
        sess.notice = f"Signed version {v.version} as {user.username}."
        st.rerun()
    if c2.button("Cancel", key="dlg_cancel", width="stretch"):
        st.rerun()


def _approve_refusal(user, detail: logic.StudyDetail) -> str | None:  # noqa: ANN001
    """Why the approve shortcut does nothing, as the button shows it (disabled with this help), or None."""
    latest = detail.latest
    if latest is None:
        return "No report version yet."
    if not logic.can_sign(user.role):
        return "Only radiologists can sign reports."
    if latest.status == "signed" and _editor_text(detail) == (latest.findings, latest.impression):
        return "This version is already signed."
    return None


def _on_key(store, sess: logic.DashboardSession, user, detail: logic.StudyDetail, value) -> None:  # noqa: ANN001
    event = shortcuts.key_event(value, st.session_state.get(_NONCE_KEY))
    if event is None:
        return
    key, nonce = event
    st.session_state[_NONCE_KEY] = nonce
    if key == "approve":
        refusal = _approve_refusal(user, detail)
        if refusal is not None:
            st.toast(refusal, icon=":material/block:")
            st.warning(refusal)
            return
        _confirm_approve(store, sess, user, detail)
        return
    table, _ = logic.load_worklist(store, sess.filters)
    uid = shortcuts.neighbour_study([str(u) for u in table["study_uid"]], detail.study_uid,
                                    1 if key == "next" else -1)
    if uid is None:
        st.toast("No " + ("next" if key == "next" else "previous") + " study in the worklist.")
        return
    open_study_page(store, sess, user, uid)
