"""Sentence confidences from token log-probabilities.

A generated token's log-probability is log p(token | image, prompt, earlier tokens) under the
model's own distribution (log-softmax of the raw logits, before any logits processor). A
sentence's confidence aggregates the tokens that overlap it:

- "mean": exp(mean token logprob), the geometric-mean token probability. Length-neutral, so a
  long sentence is not penalised for being long; the default.
- "min": the probability of the least likely token. Stricter: one doubtful word (a side, a size)
  marks the whole sentence.

These are model-calibration signals for highlighting, not probabilities that the finding is true.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medvlm.prompts import report_spans, sentence_spans

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class SentenceConfidence:
    """One generated sentence with its confidence."""

    text: str
    """The sentence."""
    section: str
    """"findings", "impression", or "answer" (text outside both headers)."""
    confidence: float
    """Aggregated token probability in [0, 1] (see module docstring for mean vs min)."""
    mean_logprob: float
    """Mean token log-probability (<= 0)."""
    min_prob: float
    """Probability of the least likely token of the sentence."""
    n_tokens: int
    """Tokens overlapping the sentence."""


def token_char_ends(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int]) -> list[int]:
    """Character end offset of each token in `decode(token_ids)` (special tokens skipped).

    Decodes growing prefixes, so byte-level tokens that split a UTF-8 character still map to
    the right text. O(n^2) in the number of tokens; reports are a few hundred tokens at most.
    """
    ends = []
    for i in range(len(token_ids)):
        text = tokenizer.decode(
            token_ids[: i + 1], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        ends.append(len(text))
    return ends


_HEADER_RE = re.compile(r"(FINDINGS|IMPRESSION)\s*:", re.IGNORECASE)


def section_ranges(text: str) -> list[tuple[str, int, int]]:
    """(section, start, end) character ranges of the FINDINGS / IMPRESSION bodies (headers excluded)."""
    ranges: list[tuple[str, int, int]] = []
    section, pos = "answer", 0
    for match in _HEADER_RE.finditer(text):
        ranges.append((section, pos, match.start()))
        section, pos = match.group(1).lower(), match.end()
    ranges.append((section, pos, len(text)))
    return [r for r in ranges if text[r[1] : r[2]].strip()]


def sentence_confidences(
    tokenizer: PreTrainedTokenizerBase,
    token_ids: Sequence[int],
    token_logprobs: Sequence[float],
    how: str = "mean",
    *,
    report: bool = False,
) -> tuple[str, list[SentenceConfidence]]:
    """Decode generated tokens and score each sentence.

    Args:
        tokenizer: the model's tokenizer.
        token_ids: generated ids, stop token and padding already removed.
        token_logprobs: log-probability of each id (same length).
        how: "mean" (exp of mean logprob) or "min" (least likely token).
        report: the text is a drafted report: sections as `prompts.report_spans` splits it (also
            without headers); else FINDINGS:/IMPRESSION: headers only, other text is "answer".

    Returns:
        (decoded text, sentences in order).

    Raises:
        ValueError: lengths differ or `how` is unknown.
    """
    if len(token_ids) != len(token_logprobs):
        raise ValueError(f"{len(token_ids)} token ids but {len(token_logprobs)} log-probabilities")
    if how not in ("mean", "min"):
        raise ValueError(f"how must be mean or min, got {how!r}")
    text = tokenizer.decode(list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    ends = token_char_ends(tokenizer, list(token_ids))
    starts = [0, *ends[:-1]]
    out: list[SentenceConfidence] = []
    for section, lo, hi in report_spans(text) if report else section_ranges(text):
        for s, e in sentence_spans(text[lo:hi]):
            s, e = s + lo, e + lo
            lps = [lp for lp, a, b in zip(token_logprobs, starts, ends, strict=True) if a < e and b > s]
            if not lps:
                continue
            mean_lp = sum(lps) / len(lps)
            min_p = math.exp(min(lps))
            conf = math.exp(mean_lp) if how == "mean" else min_p
            out.append(SentenceConfidence(text[s:e], section, conf, mean_lp, min_p, len(lps)))
    return text, out
