"""Study-level keyboard shortcuts reported by the viewer component, as plain functions.

The component sends ``{"key": ..., "nonce": ...}`` for next, previous and approve. Streamlit keeps a
component's last value across reruns, so an event counts once: only a nonce not handled before is
acted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

STUDY_KEYS = ("next", "previous", "approve")
HELP = ("Keys: **n**/**j** next study · **p**/**k** previous · **a** approve (asks to confirm) · **e** edit "
        "report · **w** window/level · **l** length · **i** invert · **r** reset · **o** findings overlay. "
        "Mouse: left-drag window/level, wheel or right-drag zoom, middle-drag pan.")


def key_event(value: Any, last_nonce: str | None) -> tuple[str, str] | None:
    """The (key, nonce) of a new study-level key press, or None.

    Args:
        value: the component's value (None before any key, else a dict from the browser).
        last_nonce: the nonce handled last in this browser session.

    Returns:
        ``(key, nonce)`` when ``value`` is a well-formed press of a ``STUDY_KEYS`` key with a new nonce.
    """
    if not isinstance(value, dict):
        return None
    key, nonce = value.get("key"), value.get("nonce")
    if key not in STUDY_KEYS or not isinstance(nonce, str) or not nonce or nonce == last_nonce:
        return None
    return key, nonce


def neighbour_study(study_uids: Sequence[str], current: str, step: int) -> str | None:
    """The study ``step`` places from ``current`` in worklist order, or None past either end.

    A study no longer in the list (signed, so filtered out) is before the first: next opens the
    list's first study, previous its last.
    """
    if not study_uids:
        return None
    if current not in study_uids:
        return study_uids[0] if step > 0 else study_uids[-1]
    i = list(study_uids).index(current) + step
    return study_uids[i] if 0 <= i < len(study_uids) else None
