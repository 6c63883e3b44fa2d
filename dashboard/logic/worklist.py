"""The worklist as a table: the store's page of studies turned into the DataFrame the page shows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.store.worklist import (
    FLAGGED_CHOICES,
    REVIEW_STATES,
    SORT_COLUMNS,
    STUDY_STATUSES,
    WORKLIST_LIMIT,
    WorklistFilters,
    worklist_counts,
)
from pipelines.store.worklist import load_worklist as load_worklist_page

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.store import Store

__all__ = ["COLUMNS", "FLAGGED_CHOICES", "REVIEW_STATES", "SORT_COLUMNS", "STUDY_STATUSES", "WORKLIST_LIMIT", "WorklistFilters",
           "load_worklist", "worklist_counts"]

COLUMNS = ("study_uid", "study", "status", "review", "priority", "received_at", "flags", "min_confidence",
           "model_version")
"""The table's columns, in order (``pipelines.store.worklist.WorklistRow``'s fields)."""


def load_worklist(store: Store, filters: WorklistFilters) -> tuple[pd.DataFrame, int]:
    """Query the worklist: one row per study with its review state, flags and lowest confidence.

    Args:
        store: the review store.
        filters: what to show and in which order.

    Returns:
        ``(table, total)``: a DataFrame of at most ``filters.limit`` rows with the columns
        ``COLUMNS`` (``received_at`` tz-aware UTC, ``min_confidence`` float with NaN when unknown),
        and the number of studies matching the filters.
    """
    import pandas as pd

    page = load_worklist_page(store, filters)
    df = pd.DataFrame.from_records([tuple(getattr(r, c) for c in COLUMNS) for r in page.rows], columns=list(COLUMNS))
    df["received_at"] = pd.to_datetime(df["received_at"], utc=True)
    df["min_confidence"] = df["min_confidence"].astype("float64")
    return df, page.total
