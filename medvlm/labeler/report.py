"""Stage 4: combine mention labels into one label per observation, for a report or a record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from medvlm.labeler.mentions import find_mentions
from medvlm.labeler.patterns import NORMAL_REPORT_RE
from medvlm.labeler.phrases import OTHER
from medvlm.labeler.results import NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN, Label, Mention

_RANK = {POSITIVE: 2, UNCERTAIN: 1, NEGATIVE: 0}


def aggregate(
    mentions: Iterable[Mention], *, text: str = "", devices_block_no_finding: bool = False
) -> dict[str, Label]:
    """Combine mention labels into one label per observation (positive > uncertain > negative).

    Args:
        mentions: mentions from ``find_mentions``/``label_sentence``.
        text: the text they came from; used only to decide whether it reads as a normal report.
        devices_block_no_finding: when True, a positive or uncertain Support Devices label also
            keeps "No Finding" from being positive. False (the default) is CheXpert's rule: a
            device is not a finding. True follows the IU curators' convention (they never tag a
            report that mentions a device ``normal``); use it to compare with their tags.

    Returns:
        Observation name -> ``Label``, in CheXpert order, unmentioned observations left out.
    """
    best: dict[str, str] = {}
    sides: dict[str, set[str]] = {}
    for m in mentions:
        if m.observation not in best or _RANK[m.value] > _RANK[best[m.observation]]:
            best[m.observation] = m.value
        if m.laterality and m.value != NEGATIVE:
            sides.setdefault(m.observation, set()).add(m.laterality)
    other = best.pop(OTHER, None)
    abnormal = any(
        v != NEGATIVE for obs, v in best.items() if devices_block_no_finding or obs != "Support Devices"
    )
    if not abnormal and other in (None, NEGATIVE):
        reads_normal = bool(NORMAL_REPORT_RE.search(text.lower())) or any(
            v == NEGATIVE for v in best.values()
        )
        if reads_normal:
            best["No Finding"] = POSITIVE
    labels: dict[str, Label] = {}
    for obs in OBSERVATIONS:
        if obs not in best:
            continue
        side_set = sides.get(obs, set())
        side = None
        if best[obs] != NEGATIVE and side_set:
            side = side_set.pop() if len(side_set) == 1 else "bilateral"
        labels[obs] = Label(best[obs], side)
    return labels


def label_report(text: str, *, devices_block_no_finding: bool = False) -> dict[str, Label]:
    """Label a report's text with CheXpert's 14 observations.

    Args:
        text: the report text (for example findings and impression joined).
        devices_block_no_finding: see ``aggregate``; False (default) keeps CheXpert's semantics.

    Returns:
        Observation name -> ``Label`` for every observation the text mentions, in CheXpert order;
        observations not mentioned are left out. "No Finding" appears (positive) only when the
        text reads as normal.
    """
    return aggregate(find_mentions(text), text=text, devices_block_no_finding=devices_block_no_finding)


def report_text(record: Mapping[str, object]) -> str:
    """Findings and impression of a report record joined into one text (missing ones skipped)."""
    parts = []
    for key in ("findings", "impression"):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            part = value.strip()
            parts.append(part if part.endswith((".", "!", "?")) else part + ".")
    return "\n\n".join(parts)


def label_record(record: Mapping[str, object], *, devices_block_no_finding: bool = False) -> dict[str, Label]:
    """Label a report record from its ``findings`` and ``impression`` fields.

    Args:
        record: a mapping with optional string fields ``findings`` and ``impression``.
        devices_block_no_finding: see ``aggregate``; False (default) keeps CheXpert's semantics.

    Returns:
        As ``label_report``.

    Raises:
        ValueError: when neither field is present as a string.
    """
    if not any(isinstance(record.get(k), str) for k in ("findings", "impression")):
        raise ValueError("record has neither a 'findings' nor an 'impression' string")
    return label_report(report_text(record), devices_block_no_finding=devices_block_no_finding)


def labels_as_strings(labels: Mapping[str, Label]) -> dict[str, str]:
    """``{observation: value}`` with plain strings, in CheXpert order (for JSON output)."""
    return {obs: labels[obs].value for obs in OBSERVATIONS if obs in labels}
