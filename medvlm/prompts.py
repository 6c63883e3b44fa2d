"""Prompts: chat messages for report drafting and question answering, the chat template, report parsing.

Messages use the Hugging Face multimodal chat format (`{"role": ..., "content": [{"type": "image"},
{"type": "text", "text": ...}]}`); the template below renders them, one `<image>` per view, which
the processor then expands to `image_seq_length` placeholder tokens each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medvlm.config import PromptConfig

# Rendered as: <s><|system|>\n...<|end|>\n<|user|>\n<image><image>...<|end|>\n<|assistant|>\n...
CHAT_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
END_OF_TURN = "<|end|>"
FINDINGS_HEADER = "FINDINGS:"
IMPRESSION_HEADER = "IMPRESSION:"
HINT_PREFIX = "Image classifier:"
"""Starts the prompt line that carries the findings head's reading."""


@dataclass(frozen=True)
class ReportSections:
    """A report split into its two sections."""

    findings: str
    """Text after FINDINGS: (empty when absent)."""
    impression: str
    """Text after IMPRESSION: / CONCLUSION: (empty when absent)."""
    headers: bool = True
    """Whether the text had section headers; False: split by `parse_report`'s fallback (keep the raw text)."""


def format_report(findings: str, impression: str) -> str:
    """The assistant's answer text the model is trained to produce: "FINDINGS: ... IMPRESSION: ..."."""
    return f"{FINDINGS_HEADER} {findings.strip()}\n{IMPRESSION_HEADER} {impression.strip()}"


# "Impression:" anywhere, or a line that starts with the word alone ("**Conclusion**", "Impression -").
_WORDS = r"(FINDINGS|IMPRESSIONS?|CONCLUSIONS?)"
_SECTION_RE = re.compile(rf"\b{_WORDS}\s*\**\s*:|^[ \t#*]*{_WORDS}\b[ \t*]*(?:-|$)", re.IGNORECASE | re.MULTILINE)


def report_spans(text: str) -> list[tuple[str, int, int]]:
    """(section, start, end) character ranges of the findings and impression bodies of a draft.

    Headers (FINDINGS / IMPRESSION / CONCLUSION, with a colon or alone at the start of a line) split
    the text; text before the first header is findings. Without any header (MedGemma, Qwen write
    prose) the last sentence is the impression and the rest findings; a single sentence is findings.
    """
    matches = list(_SECTION_RE.finditer(text))
    if not matches:
        spans = sentence_spans(text)
        if len(spans) < 2:
            return [("findings", 0, len(text))] if text.strip() else []
        return [("findings", 0, spans[-1][0]), ("impression", spans[-1][0], len(text))]
    ranges, section, pos = [], "findings", 0
    for match in matches:
        ranges.append((section, pos, match.start()))
        word = (match.group(1) or match.group(2)).upper()
        section, pos = ("findings" if word == "FINDINGS" else "impression"), match.end()
    ranges.append((section, pos, len(text)))
    return [r for r in ranges if text[r[1] : r[2]].strip(" \t\n*#")]


def parse_report(text: str) -> ReportSections:
    """Split generated text into findings and impression (see `report_spans`); whitespace is collapsed."""
    parts: dict[str, list[str]] = {"findings": [], "impression": []}
    for section, start, end in report_spans(text):
        parts[section].append(text[start:end].strip(" \t\n*#"))
    findings, impression = (" ".join(" ".join(parts[k]).split()) for k in ("findings", "impression"))
    return ReportSections(findings, impression, headers=bool(_SECTION_RE.search(text)))


_SENTENCE_RE = re.compile(r"[^.!?]+(?:[.!?]+|$)")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans (start, end) of the sentences of `text` (split after . ! ?; blanks trimmed)."""
    spans = []
    for match in _SENTENCE_RE.finditer(text):
        start, end = match.start(), match.end()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def _clip(text: str | None, limit: int) -> str:
    text = " ".join((text or "").split())
    return text[:limit]


def report_messages(
    n_views: int,
    prompt: PromptConfig,
    *,
    n_prior_views: int = 0,
    prior_report: str | None = None,
    indication: str | None = None,
    report: str | None = None,
    findings_hint: str | None = None,
) -> list[dict]:
    """Chat messages asking for a report on `n_views` images (plus an optional prior study).

    Args:
        n_views: images of the current study (each becomes one `<image>`).
        prompt: wording.
        n_prior_views: images of the prior study, placed after the current ones.
        prior_report: the prior study's report text.
        indication: the clinical indication.
        report: the target answer ("FINDINGS: ... IMPRESSION: ..."); adds an assistant turn.
        findings_hint: the findings head's reading (`medvlm.heads.findings_hint`), e.g. "left pleural
            effusion"; the model was trained to verbalise it (classification-guided drafting).

    Returns:
        Messages for `processor.apply_chat_template`.
    """
    content: list[dict] = [{"type": "text", "text": "Current study:"}]
    content += [{"type": "image"} for _ in range(n_views)]
    if n_prior_views:
        content.append({"type": "text", "text": "\nPrior study:"})
        content += [{"type": "image"} for _ in range(n_prior_views)]
    if prior_report:
        content.append(
            {"type": "text", "text": "\nPrior report: " + _clip(prior_report, prompt.prior_report_max_chars)}
        )
    if indication:
        content.append(
            {"type": "text", "text": "\nIndication: " + _clip(indication, prompt.indication_max_chars)}
        )
    if findings_hint:
        content.append({"type": "text", "text": f"\n{HINT_PREFIX} " + _clip(findings_hint, prompt.indication_max_chars)})
    content.append({"type": "text", "text": "\n" + prompt.report_instruction})
    messages = [
        {"role": "system", "content": [{"type": "text", "text": prompt.system}]},
        {"role": "user", "content": content},
    ]
    if report is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": report}]})
    return messages


def vqa_messages(
    n_views: int,
    question: str,
    prompt: PromptConfig,
    history: list[tuple[str, str]] | None = None,
    answer: str | None = None,
) -> list[dict]:
    """Chat messages for a question about the images, after earlier (question, answer) turns.

    The images go with the first user turn, so a multi-turn conversation keeps one set of images.
    """
    turns = [*(history or []), (question, answer)]
    messages: list[dict] = [{"role": "system", "content": [{"type": "text", "text": prompt.vqa_system}]}]
    for i, (q, a) in enumerate(turns):
        content: list[dict] = [{"type": "image"} for _ in range(n_views)] if i == 0 else []
        content.append({"type": "text", "text": ("\n" if i == 0 else "") + " ".join(q.split())})
        messages.append({"role": "user", "content": content})
        if a is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
    return messages
