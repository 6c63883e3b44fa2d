"""Study page: frontal and lateral views with window/level and zoom, the AI draft, editing,
version history with a diff, approve (sign) and reject, and similar prior cases (by image with a
configured model, else by shared findings labels)."""

from __future__ import annotations

import streamlit as st

from dashboard import logic, viewer
from dashboard.ui.ask import cached_bundle

_LEGEND = (":orange-background[orange]: low model confidence (below "
           f"{logic.LOW_CONFIDENCE:.0%}) · :red-background[⚑ red]: part of a consistency flag (listed below)")


@st.cache_resource(show_spinner=False, max_entries=16)
def _image(path: str) -> viewer.ViewerImage:
    return viewer.load_viewer_image(path)


def _viewer(detail: logic.StudyDetail) -> None:
    if not detail.images:
        st.warning("No image files were found for this study.")
        return
    preset = st.segmented_control("Window preset", list(viewer.PRESETS), default="default",
                                  key="vw_preset") or "default"
    c1, c2, c3, c4, c5 = st.columns(5)
    level = c1.slider("Level offset (%)", -50, 50, 0, 5, key="vw_level")
    width_pct = c2.slider("Width (%)", 25, 400, 100, 25, key="vw_width")
    zoom = c3.slider("Zoom", 1.0, 4.0, 1.0, 0.25, key="vw_zoom")
    pan_x = c4.slider("Pan left–right", 0.0, 1.0, 0.5, 0.05, key="vw_panx", disabled=zoom == 1.0)
    pan_y = c5.slider("Pan up–down", 0.0, 1.0, 0.5, 0.05, key="vw_pany", disabled=zoom == 1.0)
    cols = st.columns(max(1, min(2, len(detail.images))))
    for col, (view, path) in zip(cols, detail.images[:2], strict=False):
        try:
            img = _image(str(path))
        except viewer.ViewerError as exc:
            col.error(str(exc))
            continue
        centre, width = viewer.preset_window(img, preset)
        span = img.robust_range[1] - img.robust_range[0]
        centre, width = centre + level / 100 * span, width * width_pct / 100
        pixels = viewer.render_view(img, centre=centre, width=width, zoom=zoom, pan=(pan_y, pan_x))
        col.image(pixels, caption=f"{view} · W {width:.0f} / L {centre:.0f} · ×{zoom:g}", width="stretch")
    if len(detail.images) > 2:
        st.caption(f"{len(detail.images) - 2} more image(s) in this study are not shown.")


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
        _viewer(detail)
    with right:
        _draft(store, detail)
        _actions(store, sess, user, detail)
        _similar(store, detail)
        _history(detail)
