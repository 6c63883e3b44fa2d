"""A rule-based chest radiograph report labeler for CheXpert's 14 observations.

Each observation that a report mentions is labelled ``positive``, ``negative`` or ``uncertain``
(with the side where the report states one); observations the report does not mention are left out.

How it works, sentence by sentence (NegEx-style), one module per stage:

1. ``sentences``: the report is split into sentences, each sentence into clauses at conjunctions
   that end a negation's scope ("but", "however", "although", "and there is", ";" ...).
2. ``mentions``: mention phrases (the synonym table ``MENTION_PHRASES`` in ``phrases``, pure data)
   are found; phrases that are other things (``pericardial effusion`` is not a pleural effusion)
   are masked first. Fixed phrases that state a normal result ("heart size is normal", "lungs are
   clear") give negative labels directly (``NORMAL_PHRASES``).
3. ``cues``: each mention is labelled from cues in its own clause: uncertainty that wraps a
   negation ("cannot be excluded") first, then negation ("no", "without", "free of", "is not
   seen" ...), then uncertainty ("may", "possible", "versus", "borderline" ...); otherwise positive.
4. ``report``: mentions combine over the report: positive beats uncertain beats negative
   (CheXpert's rule). "No Finding" is positive when nothing but Support Devices is positive or
   uncertain and the report reads as normal (no other abnormality such as granuloma, emphysema or
   scoliosis is asserted). ``devices_block_no_finding=True`` also lets a device stop "No Finding"
   (the IU curators' convention, used by ``benchmarks/score_labeler.py``); the default keeps
   CheXpert's rule.

``phrases`` (mention tables) and ``cue_phrases`` (negation, uncertainty, clause and side words)
are pure data; ``patterns`` compiles them once; ``results`` defines ``Label`` and ``Mention``.

Choices worth knowing: a heart size "at the upper limits of normal" is a normal size (negative),
while "borderline" stays uncertain; "volume loss" is not atelectasis (it is often post-surgical) but
does stop "No Finding"; "to exclude"/"rule out" a finding negates it, "cannot exclude" does not.

Pure Python and ``re`` only: importing this package is instant, and it never imports torch.
"""

from __future__ import annotations

from medvlm.labeler.cue_phrases import (
    CLAUSE_BREAKS,
    POST_NEGATIONS,
    POST_UNCERTAIN,
    POST_UNCERTAIN_OVER_NEGATION,
    PRE_NEGATIONS,
    PRE_UNCERTAIN,
    PRE_UNCERTAIN_OVER_NEGATION,
    PSEUDO_NEGATIONS,
)
from medvlm.labeler.mentions import find_mentions, label_sentence
from medvlm.labeler.phrases import EXCLUDED_PHRASES, MENTION_PHRASES, NORMAL_PHRASES, NORMAL_REPORT_PHRASES
from medvlm.labeler.report import aggregate, label_record, label_report, labels_as_strings, report_text
from medvlm.labeler.results import (
    LATERALITIES,
    NEGATIVE,
    OBSERVATIONS,
    POSITIVE,
    UNCERTAIN,
    VALUES,
    Label,
    Mention,
)
from medvlm.labeler.sentences import split_sentences

__all__ = [
    "CLAUSE_BREAKS",
    "EXCLUDED_PHRASES",
    "LATERALITIES",
    "MENTION_PHRASES",
    "NEGATIVE",
    "NORMAL_PHRASES",
    "NORMAL_REPORT_PHRASES",
    "OBSERVATIONS",
    "POSITIVE",
    "POST_NEGATIONS",
    "POST_UNCERTAIN",
    "POST_UNCERTAIN_OVER_NEGATION",
    "PRE_NEGATIONS",
    "PRE_UNCERTAIN",
    "PRE_UNCERTAIN_OVER_NEGATION",
    "PSEUDO_NEGATIONS",
    "UNCERTAIN",
    "VALUES",
    "Label",
    "Mention",
    "aggregate",
    "find_mentions",
    "label_record",
    "label_report",
    "label_sentence",
    "labels_as_strings",
    "report_text",
    "split_sentences",
]
