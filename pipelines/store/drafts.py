"""A draft's stored ``sentences`` and ``flags`` JSON, normalised into typed records.

The batch job (``pipelines.drafting.job``), the demo seeder and older stores wrote these columns in
a few shapes; every reader (the worklist's flag counts, the study page) goes through
``parse_sentences`` / ``parse_flags`` so the shapes are understood in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DraftSentence:
    """One draft sentence.

    Attributes:
        text: the sentence.
        section: ``findings`` or ``impression``.
        confidence: in [0, 1], or None when unknown.
        index: position over findings then impression (what flags refer to).
    """

    text: str
    section: str
    confidence: float | None
    index: int


@dataclass(frozen=True)
class DraftFlag:
    """One consistency flag of a draft.

    Attributes:
        code: e.g. ``contradiction``.
        message: the flag's message.
        sentence_indices: sentences involved.
    """

    code: str
    message: str
    sentence_indices: tuple[int, ...]


def parse_sentences(raw: Any) -> list[DraftSentence]:
    """Normalise a draft's stored ``sentences`` (list of dicts, or plain strings) into ``DraftSentence``s.

    Unknown shapes are skipped; a missing confidence stays None (shown as unknown, not as low).

    Args:
        raw: the stored JSON value.

    Returns:
        The sentences in stored order, ``index`` counting only the kept ones.
    """
    out: list[DraftSentence] = []
    for item in raw or []:
        if isinstance(item, str):
            out.append(DraftSentence(item, "findings", None, len(out)))
            continue
        if not isinstance(item, Mapping) or not str(item.get("text", "")).strip():
            continue
        conf = item.get("confidence")
        conf_f = float(conf) if isinstance(conf, int | float) else None
        section = str(item.get("section") or "findings").lower()
        out.append(DraftSentence(str(item["text"]).strip(), section, conf_f, len(out)))
    return out


PROBABILITIES_KEY = "findings_probabilities"
"""Key of the draft's ``flags`` JSON that holds the findings head's probabilities (not a flag)."""


def parse_probabilities(raw_flags: Any) -> dict[str, float]:
    """The findings head's probability per target stored with a draft (``{}`` when it had no head).

    Args:
        raw_flags: the stored ``flags`` JSON value (the probabilities live under ``PROBABILITIES_KEY``).

    Returns:
        Target name (observation, or "<observation>|<side>") -> probability in [0, 1]; other values skipped.
    """
    probs = raw_flags.get(PROBABILITIES_KEY) if isinstance(raw_flags, Mapping) else None
    if not isinstance(probs, Mapping):
        return {}
    return {str(k): float(v) for k, v in probs.items() if isinstance(v, int | float) and 0.0 <= v <= 1.0}


def parse_flags(raw: Any) -> list[DraftFlag]:
    """Normalise a draft's stored ``flags`` into ``DraftFlag``s.

    Accepts a list of flag mappings (``code``, ``message``, ``sentence_indices``), or a mapping whose
    list values hold such mappings (``{"consistency": [...], "low_confidence": [...]}``), or a
    mapping of code → message.

    Args:
        raw: the stored JSON value.

    Returns:
        The flags; an empty list for None or an empty mapping.
    """
    items: list[Any] = []
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            if key == PROBABILITIES_KEY:  # the head's probabilities, stored beside the flags
                continue
            if isinstance(value, list):
                items.extend(v if isinstance(v, Mapping) else {"code": key, "message": str(v)} for v in value)
            elif isinstance(value, Mapping):
                items.append({"code": key, **value})
            elif isinstance(value, str):
                items.append({"code": key, "message": value})
    elif isinstance(raw, list | tuple):
        items = list(raw)
    out: list[DraftFlag] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        idx = item.get("sentence_indices") or ()
        out.append(DraftFlag(
            code=str(item.get("code", "flag")),
            message=str(item.get("message", "")),
            sentence_indices=tuple(int(i) for i in idx if isinstance(i, int)),
        ))
    return out


def min_confidence(raw_sentences: Any) -> float | None:
    """The lowest sentence confidence of a draft's stored ``sentences``, or None when none has one."""
    vals = [s.get("confidence") for s in raw_sentences or [] if isinstance(s, Mapping)]
    vals = [float(v) for v in vals if isinstance(v, int | float)]
    return min(vals) if vals else None
