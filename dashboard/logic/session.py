"""The browser session's state, declared once (STYLE rule 21): who is logged in, which page and study."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from dashboard.auth import User
from pipelines.store.worklist import WorklistFilters

PAGES = ("Worklist", "Study", "Ask", "Model")
SESSION_KEY = "medvlm_session"


@dataclass
class DashboardSession:
    """Everything one browser session keeps between reruns (the only session state).

    Attributes:
        user: the logged-in user, or None.
        page: the page shown, one of ``PAGES``.
        study_uid: the study open on the Study/Ask pages.
        filters: worklist filters.
        notice: a confirmation shown once after an action (e.g. "Signed version 3").
        edit_generation: bumped after each saved edit so the editor widgets reload.
    """

    user: User | None = None
    page: str = "Worklist"
    study_uid: str | None = None
    filters: WorklistFilters = field(default_factory=WorklistFilters)
    notice: str | None = None
    edit_generation: int = 0


def init_session(state: MutableMapping[str, Any]) -> DashboardSession:
    """Return the session's ``DashboardSession``, creating it on first use.

    Args:
        state: ``st.session_state`` (or any mutable mapping in tests).

    Returns:
        The one ``DashboardSession`` stored under ``SESSION_KEY``.
    """
    if SESSION_KEY not in state:
        state[SESSION_KEY] = DashboardSession()
    return state[SESSION_KEY]
