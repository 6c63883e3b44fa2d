"""Text safety and formatting: escaping untrusted text for Streamlit markdown, sentences, flags, diffs.

Model output and DICOM text are shown through Streamlit markdown only after ``escape_markdown``;
nothing is ever rendered with ``unsafe_allow_html``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from pipelines.store.drafts import DraftFlag, DraftSentence, parse_flags, parse_sentences
from pipelines.store.study_detail import study_label

__all__ = ["LOW_CONFIDENCE", "FlagView", "SentenceView", "diff_markdown", "escape_markdown", "parse_flags",
           "parse_sentences", "section_markdown", "sentence_markdown", "short_id", "version_diff"]

LOW_CONFIDENCE = 0.5
"""Sentences below this confidence are highlighted (the confidence is a token probability)."""

SentenceView = DraftSentence
"""One draft sentence as shown: the store's own normalised record (text, section, confidence, index)."""

FlagView = DraftFlag
"""One consistency flag as shown: the store's own normalised record (code, message, sentence indices)."""

short_id = study_label
"""A study's short label: its accession/study id from the metadata, else the UID's tail."""

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$=&^])")


def escape_markdown(text: str) -> str:
    """Escape text so Streamlit markdown shows it literally.

    Every Markdown/HTML-significant ASCII punctuation character is backslash-escaped (CommonMark
    allows escaping any ASCII punctuation), which also disarms Streamlit's ``:color[...]`` and
    ``:emoji:`` directives and ``$`` LaTeX. Newlines become spaces (a sentence is one line), so
    headings, lists and block HTML cannot start.

    Args:
        text: untrusted text (model output, DICOM text, user text).

    Returns:
        Markdown source that renders as the same characters.
    """
    flat = re.sub(r"[\r\n\t\v\f]+", " ", str(text))
    return _MD_SPECIAL.sub(r"\\\1", flat)


def sentence_markdown(sentence: SentenceView, *, threshold: float = LOW_CONFIDENCE,
                      flagged: bool = False) -> str:
    """Markdown for one sentence: escaped, low-confidence ones on an orange background.

    Args:
        sentence: the sentence.
        threshold: confidence below which the sentence is highlighted.
        flagged: the sentence takes part in a consistency flag (red background).

    Returns:
        Markdown source (the text always escaped).
    """
    text = escape_markdown(sentence.text)
    if flagged:
        return f":red-background[⚑ {text}]"
    if sentence.confidence is not None and sentence.confidence < threshold:
        return f":orange-background[{text}]"
    return text


def section_markdown(sentences: Sequence[SentenceView], section: str, flags: Sequence[FlagView] = (),
                     *, threshold: float = LOW_CONFIDENCE) -> str:
    """Markdown for one report section (sentences joined by spaces); "" when it has none.

    Args:
        sentences: the draft's sentences.
        section: ``findings`` or ``impression``.
        flags: the draft's flags (their sentences are marked red).
        threshold: confidence below which a sentence is highlighted orange.

    Returns:
        Markdown source.
    """
    flagged = {i for f in flags for i in f.sentence_indices}
    parts = [sentence_markdown(s, threshold=threshold, flagged=s.index in flagged)
             for s in sentences if s.section == section]
    return " ".join(parts)


def version_diff(old: str, new: str) -> list[tuple[str, str]]:
    """Word-level diff of two report texts.

    Args:
        old: the earlier text.
        new: the later text.

    Returns:
        ``(op, text)`` runs in order, ``op`` one of ``=``, ``-`` (removed), ``+`` (added).
    """
    a, b = old.split(), new.split()
    runs: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            runs.append(("=", " ".join(a[i1:i2])))
            continue
        if tag in ("delete", "replace"):
            runs.append(("-", " ".join(a[i1:i2])))
        if tag in ("insert", "replace"):
            runs.append(("+", " ".join(b[j1:j2])))
    return runs


def diff_markdown(old: str, new: str) -> str:
    """Markdown of ``version_diff``: removed words struck through in red, added in green."""
    out = []
    for op, text in version_diff(old, new):
        esc = escape_markdown(text)
        out.append(esc if op == "=" else (f":red[~~{esc}~~]" if op == "-" else f":green[**{esc}**]"))
    return " ".join(out) or "*(no text)*"
