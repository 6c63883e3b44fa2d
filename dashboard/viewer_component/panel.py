"""Draws the viewer on the study page: presets, the component, the key help line (render only)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import streamlit as st

from dashboard import logic, viewer
from dashboard.viewer_component import payload, shortcuts, viewer_component

HEIGHT = 640
"""Component height in pixels: frontal and lateral side by side at a readable size on a 1080p screen."""


@st.cache_resource(show_spinner=False, max_entries=16)
def _file(label: str, view: str, path: str) -> payload.ViewerFile:
    return payload.viewer_file(label, view, path)


@st.cache_resource(show_spinner=False, max_entries=16)
def _image(path: str) -> viewer.ViewerImage:
    return viewer.load_viewer_image(path)


def _prior_images(store, detail: logic.StudyDetail) -> tuple[list[tuple[str, Path]], str | None]:  # noqa: ANN001
    """The prior study's images and date: the same patient's latest earlier study in the store, else the
    one the study's metadata names (``prior_study_uid``)."""
    from pipelines.store.priors import find_prior
    from pipelines.store.study_detail import load_study as load_study_info

    try:
        recorded = payload.prior_study_uid(load_study_info(store, detail.study_uid).metadata, detail.study_uid)
        prior = find_prior(store, detail.study_uid, recorded=recorded)
        return (logic.load_study(store, prior.study_uid).images, prior.date) if prior else ([], None)
    except logic.ReviewError:
        st.caption("The recorded prior study is not in the review store.")
        return [], None


def _windows(files: list[tuple[str, str, Path]], preset: str) -> list[tuple[float, float] | None]:
    if preset == "default":
        return [None] * len(files)  # each file's own window, as the viewer starts
    out: list[tuple[float, float] | None] = []
    for _, _, path in files:
        try:
            out.append(viewer.preset_window(_image(str(path)), preset))
        except viewer.ViewerError:
            out.append(None)
    return out


def render(store, detail: logic.StudyDetail, *, keys: bool) -> Any:  # noqa: ANN001
    """Show the study's images in the viewer; returns the component's value (the last key event).

    Args:
        store: the review store (for the prior study).
        detail: the open study.
        keys: report next / previous / approve key presses back.
    """
    if not detail.images:
        st.warning("No image files were found for this study.")
        return None
    preset = st.segmented_control("Window preset", list(viewer.PRESETS), default="default",
                                  key="vw_preset") or "default"
    prior_images, prior_date = _prior_images(store, detail)
    panels = payload.panel_images(detail.images, prior_images, prior_date)
    files, shown = [], []
    for label, view, path in panels:
        try:
            files.append(_file(label, view, str(path)))
            shown.append((label, view, path))
        except viewer.ViewerError as exc:
            st.error(str(exc))
    if not files:
        return None
    findings = payload.finding_rows(detail.draft.probabilities if detail.draft else None)
    token = hashlib.sha256(detail.study_uid.encode()).hexdigest()[:16]
    args = payload.component_args(files, windows=_windows(shown, preset), preset=preset, study_uid_hash=token,
                                  findings=findings, keys=keys, height=HEIGHT)
    value = viewer_component(args, key="study_viewer")
    st.caption(shortcuts.HELP)
    if len(detail.images) > 2:
        st.caption(f"{len(detail.images) - 2} more image(s) in this study are not shown.")
    return value
