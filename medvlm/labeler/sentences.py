"""Stage 1: report text to sentences, sentences to clauses (the scope of a cue)."""

from __future__ import annotations

from collections.abc import Iterable

from medvlm.labeler.patterns import CLAUSE_RE, NUMBERED_RE, SENTENCE_END_RE


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences (periods not inside numbers, "!", "?", blank lines).

    Args:
        text: free report text; None-like empty strings give an empty list.

    Returns:
        The sentences, stripped, empty ones dropped, in order.
    """
    if not text:
        return []
    sentences: list[str] = []
    start = 0
    for match in SENTENCE_END_RE.finditer(text):
        end = match.end() if match.group(0) in "!?" else match.start()
        piece = text[start:end]
        start = match.end()
        piece = NUMBERED_RE.sub("", piece).strip()
        if piece.strip(" .,;:-"):
            sentences.append(piece)
    tail = NUMBERED_RE.sub("", text[start:]).strip()
    if tail.strip(" .,;:-"):
        sentences.append(tail)
    return sentences


def mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` with the characters inside ``spans`` replaced by "#" (whitespace kept), offsets unchanged."""
    chars = list(text)
    for a, b in spans:
        for i in range(a, b):
            chars[i] = " " if chars[i].isspace() else "#"
    return "".join(chars)


def clause_bounds(lowered: str) -> list[int]:
    """Character offsets where clauses start and end (always includes 0 and len)."""
    cuts = {0, len(lowered)}
    for match in CLAUSE_RE.finditer(lowered):
        cuts.add(match.start())
    return sorted(cuts)


def clause_of(cuts: list[int], start: int, end: int) -> tuple[int, int]:
    """The ``(lo, hi)`` offsets of the clause around the span ``start:end`` (``cuts`` from ``clause_bounds``)."""
    lo = max(c for c in cuts if c <= start)
    hi_candidates = [c for c in cuts if c >= end]
    hi = min(hi_candidates) if hi_candidates else cuts[-1]
    return lo, hi
