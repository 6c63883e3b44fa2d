"""Consistency flags on a drafted report, built on the labeler's sentence-level machinery.

Three checks, each giving zero or more ``Flag``s:

* ``contradiction``: an observation asserted (positive) in one sentence and negated in another,
  across the findings and impression sections.
* ``prior_without_prior``: the draft compares with a prior study ("compared to prior",
  "unchanged", "interval", "again seen", "previously", "stable" ...) when no prior was given.
* ``laterality_conflict``: the same observation asserted on different sides (for example a left
  pleural effusion in the findings and a right one in the impression), bilateral excepted.
* ``head_disagreement`` (only with the findings head's probabilities, ``medvlm.heads``): a finding
  the head is sure of (p >= ``HEAD_SURE``) that the text does not assert, or a finding (or side)
  the text asserts that the head finds unlikely (p <= ``HEAD_UNLIKELY``).

Sentence indices count over the findings' sentences first, then the impression's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from medvlm.labeler import NEGATIVE, OBSERVATIONS, UNCERTAIN, Mention, label_sentence, split_sentences

PRIOR_PHRASES: tuple[str, ...] = (
    r"compar(?:ed|ison) (?:to|with) (?:the )?(?:prior|previous|preceding|earlier|last|recent)",
    r"(?:prior|previous|preceding|earlier) (?:study|studies|exam\w*|film\w*|radiograph\w*|image\w*|"
    r"x-?rays?|chest|ct)",
    r"since (?:the )?(?:prior|previous|last)",
    r"unchanged",
    r"(?:no |without )?(?:significant )?(?:interval|new) (?:change|increase|decrease|development|improvement|"
    r"worsening|resolution|removal|placement)",
    r"interval(?:ly)?",
    r"again (?:seen|noted|demonstrated|identified|visualized)",
    r"previously",
    r"stable",
    r"(?:has|have) (?:improved|worsened|increased|decreased|resolved)",
    r"(?:improved|worsened|worsening|improving|progressed|progression|persistent|persists|redemonstrat\w+)",
    r"no longer",
    r"re-?demonstrated",
)
"""Phrases that compare with a prior study (regular expressions over lower-cased text)."""

HEAD_SURE = 0.8
"""A finding the head gives at least this probability should be in the text."""
HEAD_UNLIKELY = 0.2
"""A finding (or side) the text asserts should have more than this probability from the head."""

_PRIOR_RE = re.compile(r"(?<![\w])(?:" + "|".join(f"(?:{p})" for p in PRIOR_PHRASES) + r")(?![\w])")


@dataclass(frozen=True)
class Flag:
    """One consistency problem in a draft.

    Attributes:
        code: ``"contradiction"``, ``"prior_without_prior"``, ``"laterality_conflict"`` or
            ``"head_disagreement"``.
        message: a sentence a radiologist can act on (no report text beyond the observation name).
        sentence_indices: the sentences involved (findings first, then impression).
        sentences: those sentences' text, in the same order.
        observation: the observation concerned, or None for ``prior_without_prior``.
    """

    code: str
    message: str
    sentence_indices: tuple[int, ...]
    sentences: tuple[str, ...]
    observation: str | None = None


def _draft_sentences(findings: str, impression: str) -> list[tuple[str, str]]:
    """(section, sentence) for every sentence of the findings then the impression."""
    out = [("findings", s) for s in split_sentences(findings or "")]
    out += [("impression", s) for s in split_sentences(impression or "")]
    return out


def _mentions(sentences: list[tuple[str, str]]) -> list[Mention]:
    mentions: list[Mention] = []
    for i, (_, sentence) in enumerate(sentences):
        mentions.extend(m for m in label_sentence(sentence, i) if m.observation in OBSERVATIONS)
    return mentions


def check_consistency(findings: str, impression: str, *, has_prior: bool,
                      probabilities: Mapping[str, float] | None = None) -> list[Flag]:
    """Flag contradictions, comparisons with an absent prior, conflicting sides, and text the head disputes.

    Args:
        findings: the FINDINGS section text (may be empty).
        impression: the IMPRESSION section text (may be empty).
        has_prior: whether a prior study was given to the model; when False any comparison
            phrase is flagged.
        probabilities: the findings head's probability per target (`Draft.findings_probabilities`:
            observations and "<observation>|<side>"); None or empty skips the head check.

    Returns:
        The flags, grouped by check in the order above; an empty list for a consistent draft.
    """
    sentences = _draft_sentences(findings, impression)
    mentions = _mentions(sentences)
    flags: list[Flag] = []

    def flag(code: str, message: str, indices: set[int], observation: str | None) -> Flag:
        ordered = tuple(sorted(indices))
        return Flag(code, message, ordered, tuple(sentences[i][1] for i in ordered), observation)

    for obs in OBSERVATIONS:
        if obs == "No Finding":
            continue
        positive = {
            m.sentence_index
            for m in mentions
            if m.observation == obs and m.value not in (NEGATIVE, UNCERTAIN)
        }
        negative = {m.sentence_index for m in mentions if m.observation == obs and m.value == NEGATIVE}
        # A sentence that both asserts and negates (e.g. "no new effusion; small effusion") is
        # left to the reader; flag only across different sentences.
        if positive and negative and (positive | negative) != (positive & negative):
            flags.append(
                flag(
                    "contradiction",
                    f"{obs} is asserted in one sentence and negated in another.",
                    positive | negative,
                    obs,
                )
            )

    if not has_prior:
        hits = {i for i, (_, sentence) in enumerate(sentences) if _PRIOR_RE.search(sentence.lower())}
        if hits:
            flags.append(
                flag(
                    "prior_without_prior",
                    "The draft compares with a prior study, but no prior was given.",
                    hits,
                    None,
                )
            )

    for obs in OBSERVATIONS:
        sided = [m for m in mentions if m.observation == obs and m.value != NEGATIVE and m.laterality]
        sides = {m.laterality for m in sided}
        if "left" in sides and "right" in sides and "bilateral" not in sides:
            # both sides in one sentence can be a real finding on each side; flag across sentences only
            by_side = {s: {m.sentence_index for m in sided if m.laterality == s} for s in ("left", "right")}
            if by_side["left"] != by_side["right"]:
                flags.append(
                    flag(
                        "laterality_conflict",
                        f"{obs} is described on the left in one place and on the right in another.",
                        by_side["left"] | by_side["right"],
                        obs,
                    )
                )
    if probabilities:
        flags += [flag("head_disagreement", message, indices, obs)
                  for obs, message, indices in head_disagreements(mentions, probabilities)]
    return flags


def head_disagreements(
    mentions: list[Mention], probabilities: Mapping[str, float]
) -> list[tuple[str, str, set[int]]]:
    """(observation, message, sentence indices) where the text and the findings head disagree.

    Missing: the head is sure (p >= HEAD_SURE) and no sentence asserts the observation (a hedged
    mention counts as not asserted). Unlikely: a sentence asserts it (or a side of it) and the head
    gives that at most HEAD_UNLIKELY. "No Finding" is left out (it is the absence of the others).
    """
    out = []
    for obs in OBSERVATIONS:
        p = probabilities.get(obs)
        if obs == "No Finding" or p is None:
            continue
        asserted = [m for m in mentions if m.observation == obs and m.value not in (NEGATIVE, UNCERTAIN)]
        if p >= HEAD_SURE and not asserted:
            out.append((obs, f"The image classifier finds {obs} (probability {p:.2f}) but the draft does not "
                             "report it.", set()))
        elif asserted and p <= HEAD_UNLIKELY:
            out.append((obs, f"The draft reports {obs}, which the image classifier finds unlikely (probability "
                             f"{p:.2f}).", {m.sentence_index for m in asserted}))
        elif asserted:
            for side in ("left", "right"):
                p_side = probabilities.get(f"{obs}|{side}")
                on_side = {m.sentence_index for m in asserted if m.laterality in (side, "bilateral")}
                if p_side is not None and on_side and p_side <= HEAD_UNLIKELY:
                    out.append((obs, f"The draft reports {obs} on the {side}, which the image classifier finds "
                                     f"unlikely there (probability {p_side:.2f}).", on_side))
    return out
