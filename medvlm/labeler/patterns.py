"""The phrase and cue tables compiled to regular expressions, once per process (pure data, no state)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from medvlm.labeler.cue_phrases import (
    CLAUSE_BREAKS,
    LATERALITY_WORDS,
    POST_ALTERNATIVE,
    POST_NEGATIONS,
    POST_UNCERTAIN,
    POST_UNCERTAIN_OVER_NEGATION,
    PRE_ALTERNATIVE,
    PRE_NEGATIONS,
    PRE_UNCERTAIN,
    PRE_UNCERTAIN_OVER_NEGATION,
    PSEUDO_NEGATIONS,
)
from medvlm.labeler.phrases import EXCLUDED_PHRASES, MENTION_PHRASES, NORMAL_PHRASES, NORMAL_REPORT_PHRASES


def alternation(phrases: Iterable[str]) -> str:
    """One regular expression that matches any of ``phrases`` (each kept as its own group)."""
    return "|".join(f"(?:{p})" for p in phrases)


def bounded(phrases: Iterable[str]) -> re.Pattern[str]:
    """``alternation(phrases)`` compiled between word boundaries."""
    # (?<![\w-]) and (?![\w]) act as word boundaries that also respect hyphenated words.
    return re.compile(rf"(?<![\w])(?:{alternation(phrases)})(?![\w])")


# Observation matching (medvlm.labeler.mentions)
MENTION_RES: dict[str, re.Pattern[str]] = {obs: bounded(ps) for obs, ps in MENTION_PHRASES.items()}
EXCLUDED_RE = bounded(EXCLUDED_PHRASES)
NORMAL_RES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (bounded([p]), obs) for p, obs in NORMAL_PHRASES
)
PSEUDO_NEG_RE = bounded(PSEUDO_NEGATIONS)

# Negation and uncertainty cues (medvlm.labeler.cues)
PRE_NEG_RE = bounded(PRE_NEGATIONS)
POST_NEG_RE = bounded(POST_NEGATIONS)
PRE_UNC_NEG_RE = bounded(PRE_UNCERTAIN_OVER_NEGATION)
POST_UNC_NEG_RE = bounded(POST_UNCERTAIN_OVER_NEGATION)
PRE_UNC_RE = re.compile(bounded(PRE_UNCERTAIN).pattern + r"|\?")  # a "?" before a finding questions it
POST_UNC_RE = bounded(POST_UNCERTAIN)
PRE_ALT_RE = re.compile(PRE_ALTERNATIVE)
POST_ALT_RE = re.compile(POST_ALTERNATIVE)
LATERALITY_RES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (bounded([p]), side) for p, side in LATERALITY_WORDS
)

# Sentences and clauses (medvlm.labeler.sentences)
CLAUSE_RE = re.compile(alternation(CLAUSE_BREAKS))
SENTENCE_END_RE = re.compile(r"(?<!\d)\.(?!\d)|[!?](?=\s|$)|\n\s*\n|\n(?=\s*[A-Z0-9\-\u2022*])")
NUMBERED_RE = re.compile(r"^\s*(?:\d+[.)]|[-\u2022*])\s+")

# Aggregation (medvlm.labeler.report)
NORMAL_REPORT_RE = bounded(NORMAL_REPORT_PHRASES)
