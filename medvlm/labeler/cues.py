"""Stage 3: the value and side of one mention, from the cues in its clause (NegEx-style).

Order matters: uncertainty that wraps a negation ("cannot be excluded") is checked first, then
negation ("no", "without", "is not seen" ...), then uncertainty ("may", "possible", "versus" ...);
a mention with none of these is positive.
"""

from __future__ import annotations

from medvlm.labeler.patterns import (
    LATERALITY_RES,
    POST_ALT_RE,
    POST_NEG_RE,
    POST_UNC_NEG_RE,
    POST_UNC_RE,
    PRE_ALT_RE,
    PRE_NEG_RE,
    PRE_UNC_NEG_RE,
    PRE_UNC_RE,
)
from medvlm.labeler.results import NEGATIVE, POSITIVE, UNCERTAIN


def mention_laterality(
    lowered: str, start: int, end: int, lo: int, hi: int, taken: list[tuple[int, int]]
) -> str | None:
    """The side stated closest before the mention (same clause), else just after it.

    Args:
        lowered: the sentence, lower-cased and pseudo-negations masked.
        start: offset of the mention in ``lowered``.
        end: offset just after the mention.
        lo: start of the mention's clause.
        hi: end of the mention's clause.
        taken: spans of the sentence's other mentions (they claim side words next to them).

    Returns:
        ``"left"``, ``"right"``, ``"bilateral"`` or None where no side is stated.
    """
    found: list[tuple[int, int, str]] = []
    for pattern, side in LATERALITY_RES:
        for match in pattern.finditer(lowered, lo, hi):
            found.append((match.start(), match.end(), side))
    if not found:
        return None
    before = [f for f in found if f[1] <= start]
    inside = [f for f in found if f[0] >= start and f[1] <= end]
    after = [f for f in found if f[0] >= end]
    sides = {f[2] for f in inside}
    if sides:
        return "bilateral" if len(sides) > 1 else sides.pop()
    if before:
        a, b, side = max(before, key=lambda f: f[1])
        between = (b, start)
        # a different mention between the side word and this one takes the side word for itself,
        # unless they are joined as a list ("left lower lobe atelectasis and effusion").
        if not any(between[0] <= t0 and t1 <= between[1] for t0, t1 in taken) and start - b <= 60:
            pair = [f for f in before if f[2] != side and b - f[1] <= 12]
            return "bilateral" if pair else side
    if after:
        a, b, side = min(after, key=lambda f: f[0])
        if a - end <= 30:
            return side
    return None


def mention_value(lowered: str, start: int, end: int, lo: int, hi: int) -> str:
    """Label one mention from the cues in its clause.

    Args:
        lowered: the sentence, lower-cased and pseudo-negations masked.
        start: offset of the mention in ``lowered``.
        end: offset just after the mention.
        lo: start of the mention's clause.
        hi: end of the mention's clause.

    Returns:
        ``"positive"``, ``"negative"`` or ``"uncertain"``.
    """
    pre = lowered[lo:start]
    inside = lowered[start:end]
    post = lowered[end:hi]
    if PRE_UNC_NEG_RE.search(pre) or POST_UNC_NEG_RE.search(post):
        return UNCERTAIN
    if PRE_NEG_RE.search(pre) or PRE_NEG_RE.search(inside) or POST_NEG_RE.match(post.lstrip(" ,")):
        return NEGATIVE
    if POST_NEG_RE.search(post[:40]):
        return NEGATIVE
    if PRE_UNC_RE.search(pre) or PRE_UNC_RE.search(inside) or POST_UNC_RE.search(post[:50]):
        return UNCERTAIN
    if PRE_ALT_RE.search(pre) or POST_ALT_RE.search(post):
        return UNCERTAIN
    return POSITIVE
