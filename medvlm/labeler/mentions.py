"""Stage 2: find the observation mentions in a sentence and label each (via ``cues``)."""

from __future__ import annotations

import re

from medvlm.labeler.cues import mention_laterality, mention_value
from medvlm.labeler.patterns import EXCLUDED_RE, MENTION_RES, NORMAL_RES, PSEUDO_NEG_RE
from medvlm.labeler.phrases import NORMAL_SUBJECT_OBSERVATIONS
from medvlm.labeler.results import NEGATIVE, Mention
from medvlm.labeler.sentences import clause_bounds, clause_of, mask, split_sentences


def label_sentence(sentence: str, index: int = 0) -> list[Mention]:
    """Find and label every observation mention in one sentence.

    This is the sentence-level machinery that ``label_report`` and ``medvlm.consistency`` share.

    Args:
        sentence: one sentence (see ``split_sentences``).
        index: the sentence's index in its text, copied into each mention.

    Returns:
        The mentions in order of position; the internal "other abnormality" observation is
        included (its name starts with "_") so that callers can judge whether a text reads as normal.
    """
    lowered = sentence.lower()
    masked = PSEUDO_NEG_RE.sub(lambda m: "#" * len(m.group(0)), lowered)
    excluded = [m.span() for m in EXCLUDED_RE.finditer(masked)]
    search_text = mask(masked, excluded)
    cuts = clause_bounds(masked)

    mentions: list[Mention] = []
    taken: list[tuple[int, int]] = []
    # Normal statements first: they claim their span so that no positive mention overlaps them.
    for pattern, observations in NORMAL_RES:
        for match in pattern.finditer(masked):
            s, e = match.span()
            if any(s < t1 and t0 < e for t0, t1 in taken):
                continue
            if not observations:
                observations = tuple(o for p, o in NORMAL_SUBJECT_OBSERVATIONS if re.search(p, masked[s:e]))
                if not observations:
                    continue
            taken.append((s, e))
            for obs in observations:
                mentions.append(Mention(obs, NEGATIVE, None, index, sentence, s, e))
    raw: list[tuple[int, int, str]] = []
    for obs, pattern in MENTION_RES.items():
        for match in pattern.finditer(search_text):
            raw.append((match.start(), match.end(), obs))
    # Longest match first, so "pleural effusion" is not also "effusion", and phrases do not overlap.
    raw.sort(key=lambda r: (-(r[1] - r[0]), r[0]))
    chosen: list[tuple[int, int, str]] = []
    for s, e, obs in raw:
        if any(s < t1 and t0 < e for t0, t1 in taken):
            continue
        if any(s < c1 and c0 < e and (c0, c1) != (s, e) for c0, c1, _ in chosen):
            continue
        if any((c0, c1, cobs) == (s, e, obs) for c0, c1, cobs in chosen):
            continue
        chosen.append((s, e, obs))
    spans = [(s, e) for s, e, _ in chosen]
    for s, e, obs in chosen:
        lo, hi = clause_of(cuts, s, e)
        value = mention_value(masked, s, e, lo, hi)
        side = mention_laterality(masked, s, e, lo, hi, [t for t in spans if t != (s, e)])
        mentions.append(Mention(obs, value, side, index, sentence, s, e))
    mentions.sort(key=lambda m: (m.start, m.observation))
    return mentions


def find_mentions(text: str) -> list[Mention]:
    """All observation mentions in a text, sentence by sentence.

    Args:
        text: report text (one or more sentences).

    Returns:
        Mentions in reading order, each with its sentence index within ``split_sentences(text)``.
    """
    mentions: list[Mention] = []
    for i, sentence in enumerate(split_sentences(text)):
        mentions.extend(label_sentence(sentence, i))
    return mentions
