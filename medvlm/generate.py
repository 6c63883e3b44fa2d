"""Drafting reports and answering questions: batched generation with a KV cache, confidences, streaming.

Batches are left-padded (the next token of every row is then at the last position), decoding is
greedy or beam search (no sampling: drafts must be reproducible), and each sentence of a draft
carries a confidence from the token log-probabilities (`medvlm.confidence`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm import chat, heads
from medvlm.bundle import MedVLM
from medvlm.confidence import SentenceConfidence, sentence_confidences
from medvlm.config import GenerationSettings
from medvlm.prompts import parse_report

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class StudyInput:
    """What the model sees of one study."""

    images: Sequence[np.ndarray]
    """1..max_views float32 [0, 1] (H, W) arrays: frontal first, then lateral."""
    prior_images: Sequence[np.ndarray] = ()
    """Views of a prior study, if any."""
    prior_report: str | None = None
    """The prior study's report."""
    indication: str | None = None
    """Clinical indication."""


@dataclass(frozen=True)
class Draft:
    """A drafted report."""

    findings: str
    """FINDINGS section (a draft without headers: everything but the impression, see `parse_report`)."""
    impression: str
    """IMPRESSION section (without headers: an "Impression:"/"Conclusion:" line or the last sentence)."""
    text: str
    """The whole generated text, as the model wrote it (what the reviewer sees next to the sections)."""
    sentences: list[SentenceConfidence] = field(default_factory=list)
    """Each sentence with its section and confidence."""
    n_tokens: int = 0
    """Generated tokens (stop token excluded)."""
    findings_probabilities: dict[str, float] | None = None
    """The findings head's probability per target (`medvlm.heads`: observations and "<obs>|<side>"), which
    the prompt also carried; None when the model has no head."""


@dataclass(frozen=True)
class Answer:
    """An answer to a question about a study."""

    text: str
    """The answer."""
    confidence: float
    """exp(mean token logprob) over the whole answer (0 when empty)."""
    sentences: list[SentenceConfidence] = field(default_factory=list)
    """Each sentence with its confidence."""


def _generate_kwargs(
    bundle: MedVLM, settings: GenerationSettings, min_new_tokens: int | None
) -> dict[str, Any]:
    tok = bundle.tokenizer
    stops = list(chat.turn_format(bundle).stop_token_ids)
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "num_beams": settings.num_beams,
        "do_sample": False,
        "use_cache": True,
        "repetition_penalty": settings.repetition_penalty,
        "eos_token_id": stops,
        "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else stops[0],
    }
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    return kwargs


def _kept_rows(
    bundle: MedVLM, out: Any, prompt_len: int, stops: Sequence[int], beam: bool
) -> list[tuple[list[int], list[float]]]:
    """Per row of a `generate` output: (generated ids, their log-probabilities), cut at the first stop token."""
    if beam:  # beam scores are already log-softmaxed (and length-penalty free per step)
        scores = bundle.llava.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
    else:  # raw logits -> the model's own log-probabilities, unaffected by logits processors
        scores = bundle.llava.compute_transition_scores(out.sequences, out.logits, normalize_logits=True)
    new_ids = out.sequences[:, prompt_len:]  # (B, T)
    stop_set = set(stops)
    rows = []
    for ids, lps in zip(new_ids.tolist(), scores.float().tolist(), strict=True):
        keep_ids, keep_lps = [], []
        for t, lp in zip(ids, lps, strict=False):
            if t in stop_set:
                break
            keep_ids.append(t)
            keep_lps.append(lp if np.isfinite(lp) else -1e4)
        rows.append((keep_ids, keep_lps))
    return rows


def _run_batch(
    bundle: MedVLM,
    encodings: list[dict[str, Any]],
    settings: GenerationSettings,
    min_new_tokens: int | None,
) -> list[tuple[list[int], list[float]]]:
    """Generate for one batch; per row (generated ids, their log-probabilities), stop token removed."""
    import torch

    batch = chat.collate(bundle, encodings, padding_side="left")
    prompt_len = batch["input_ids"].shape[1]
    kwargs = _generate_kwargs(bundle, settings, min_new_tokens)
    beam = settings.num_beams > 1
    model = bundle.model
    model.eval()
    with torch.inference_mode():
        out = model.generate(
            **batch,  # input_ids, attention_mask (B, L); pixel_values and the family's extra tensors
            return_dict_in_generate=True,
            output_scores=beam,
            output_logits=not beam,
            **kwargs,
        )
        return _kept_rows(bundle, out, prompt_len, kwargs["eos_token_id"], beam)


def encode_studies(
    bundle: MedVLM, studies: Sequence[StudyInput], readings: Sequence[dict[str, float] | None] | None = None
) -> list[dict[str, Any]]:
    """Encode studies as drafting prompts for the bundle's family (see `medvlm.chat.encode_study`).

    `readings` (`medvlm.heads.head_readings`; computed here when None) put the head's findings into each prompt.
    """
    readings = heads.head_readings(bundle, [s.images for s in studies]) if readings is None else readings
    return [
        chat.encode_study(
            bundle, s.images, prior_images=s.prior_images, prior_report=s.prior_report, indication=s.indication,
            findings_hint=heads.findings_hint(r, bundle.head.spec.threshold) if r is not None else None,
        )
        for s, r in zip(studies, readings, strict=True)
    ]


def generate_drafts(
    bundle: MedVLM,
    studies: Sequence[StudyInput],
    settings: GenerationSettings | None = None,
    *,
    min_new_tokens: int | None = None,
) -> list[Draft]:
    """Draft a report for each study, `settings.batch_size` studies per `generate` call.

    Args:
        bundle: model + processor + config.
        studies: the studies, in order.
        settings: decoding settings; default the bundle config's.
        min_new_tokens: force at least this many tokens (benchmarks: a fixed amount of work).

    Returns:
        One `Draft` per study, in input order.

    Raises:
        ValueError: a malformed study (see `encode_study`).
    """
    settings = settings or bundle.config.generation
    readings = heads.head_readings(bundle, [s.images for s in studies])
    encodings = encode_studies(bundle, studies, readings)
    drafts: list[Draft] = []
    for start in range(0, len(encodings), settings.batch_size):
        rows = _run_batch(bundle, encodings[start : start + settings.batch_size], settings, min_new_tokens)
        for ids, lps in rows:
            text, sentences = sentence_confidences(
                bundle.tokenizer, ids, lps, settings.sentence_confidence, report=True
            )
            sections = parse_report(text)
            drafts.append(Draft(sections.findings, sections.impression, text, sentences, len(ids),
                                readings[len(drafts)]))
    return drafts


def draft_report(bundle: MedVLM, study: StudyInput, settings: GenerationSettings | None = None) -> Draft:
    """Draft one study's report (see `generate_drafts`)."""
    return generate_drafts(bundle, [study], settings)[0]


def answer_question(
    bundle: MedVLM,
    images: Sequence[np.ndarray],
    question: str,
    history: list[tuple[str, str]] | None = None,
    settings: GenerationSettings | None = None,
) -> Answer:
    """Answer a question about a study's images, after earlier (question, answer) turns.

    Args:
        bundle: model + processor + config.
        images: the study's views, float32 [0, 1] (H, W).
        question: the clinician's question.
        history: earlier turns of this conversation, oldest first.
        settings: decoding settings; default the bundle config's.

    Returns:
        The answer with its confidence.
    """
    settings = settings or bundle.config.generation
    enc = _encode_question(bundle, images, question, history)
    ((ids, lps),) = _run_batch(bundle, [enc], settings, None)
    return _answer(bundle, ids, lps, settings)


def _encode_question(
    bundle: MedVLM, images: Sequence[np.ndarray], question: str, history: list[tuple[str, str]] | None
) -> dict[str, Any]:
    return chat.encode_question(bundle, images, question, history)


def _answer(bundle: MedVLM, ids: list[int], lps: list[float], settings: GenerationSettings) -> Answer:
    text, sentences = sentence_confidences(bundle.tokenizer, ids, lps, settings.sentence_confidence)
    confidence = float(np.exp(np.mean(lps))) if lps else 0.0
    return Answer(text.strip(), confidence, sentences)


def _stream(
    bundle: MedVLM,
    enc: dict[str, Any],
    settings: GenerationSettings,
    timeout_s: float,
    on_done: Callable[[list[int], list[float]], None] | None = None,
) -> Iterator[str]:
    """Greedy `generate` in a thread feeding a `TextIteratorStreamer`; yield its pieces.

    After the last piece, `on_done` (if given) gets the generated ids and their log-probabilities
    (stop token removed), read from the same `generate` call: no second pass. Errors raised in the
    thread are re-raised here.
    """
    import torch
    from transformers import TextIteratorStreamer

    tok = bundle.tokenizer
    batch = chat.collate(bundle, [enc], padding_side="left")
    streamer = TextIteratorStreamer(
        tok, skip_prompt=True, timeout=timeout_s, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    kwargs = _generate_kwargs(bundle, settings, None)
    kwargs["num_beams"] = 1  # a streamer needs one hypothesis
    outputs: list[Any] = []
    errors: list[BaseException] = []
    model = bundle.model
    model.eval()

    def _work() -> None:
        try:
            with torch.inference_mode():
                outputs.append(
                    model.generate(
                        **batch,  # input_ids (1, L), attention_mask, pixel_values, extras
                        streamer=streamer,
                        return_dict_in_generate=on_done is not None,
                        output_logits=on_done is not None,
                        **kwargs,
                    )
                )
        except BaseException as exc:  # surfaced in the caller's thread below
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=_work, name="medvlm-stream", daemon=True)
    thread.start()
    try:
        yield from streamer
    finally:
        thread.join()
    if errors:
        raise errors[0]
    if on_done is not None:
        with torch.inference_mode():
            ((ids, lps),) = _kept_rows(
                bundle, outputs[0], batch["input_ids"].shape[1], kwargs["eos_token_id"], beam=False
            )
        on_done(ids, lps)


def stream_draft(
    bundle: MedVLM,
    study: StudyInput,
    settings: GenerationSettings | None = None,
    *,
    timeout_s: float = 300.0,
) -> Iterator[str]:
    """Yield a draft's text piece by piece as it is generated (for a live view in the dashboard).

    Generation runs in a thread feeding a `TextIteratorStreamer`; joining the pieces gives the
    same text as `draft_report` (greedy). Errors in the thread are re-raised here.

    Args:
        bundle: model + processor + config.
        study: the study.
        settings: decoding settings (streaming is greedy: `num_beams` is forced to 1).
        timeout_s: longest wait for the next piece.

    Yields:
        Decoded text pieces (special tokens skipped).
    """
    settings = settings or bundle.config.generation
    (enc,) = encode_studies(bundle, [study])
    yield from _stream(bundle, enc, settings, timeout_s)


def _strip_pieces(pieces: Iterator[str]) -> Iterator[str]:
    """Pass text pieces through, minus the whitespace that leads and trails the whole text.

    Trailing whitespace of a piece is held back until a later piece has visible text, so that
    joining the output equals `"".join(pieces).strip()` while still streaming.
    """
    started = False
    held = ""
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        body = piece.rstrip()
        if not body:  # whitespace only: keep it until visible text follows
            held += piece
            continue
        yield held + body
        held = piece[len(body) :]


def stream_answer(
    bundle: MedVLM,
    images: Sequence[np.ndarray],
    question: str,
    history: list[tuple[str, str]] | None = None,
    settings: GenerationSettings | None = None,
    *,
    on_answer: Callable[[Answer], None] | None = None,
    timeout_s: float = 300.0,
) -> Iterator[str]:
    """Yield an answer to a question piece by piece as it is generated (the dashboard's chat).

    The prompt is `answer_question`'s; decoding is greedy (`num_beams` forced to 1), so joining
    the pieces gives the text `answer_question` returns with greedy settings (leading and
    trailing whitespace removed, as there).

    Args:
        bundle: model + processor + config.
        images: the study's views, float32 [0, 1] (H, W).
        question: the clinician's question.
        history: earlier turns of this conversation, oldest first.
        settings: decoding settings; default the bundle config's.
        on_answer: called once after the last piece with the whole `Answer`, its confidence from
            the log-probabilities of the same generation (no second pass).
        timeout_s: longest wait for the next piece.

    Yields:
        Decoded text pieces (special tokens skipped).

    Raises:
        ValueError: no image, more than `max_views`, or a malformed image (see `encode_question`).
    """
    settings = settings or bundle.config.generation
    enc = _encode_question(bundle, images, question, history)
    on_done = None
    if on_answer is not None:

        def on_done(ids: list[int], lps: list[float]) -> None:
            on_answer(_answer(bundle, ids, lps, settings))

    yield from _strip_pieces(_stream(bundle, enc, settings, timeout_s, on_done))


def image_token_count(input_ids: torch.Tensor, bundle: MedVLM) -> int:
    """Number of `<image>` placeholders in `input_ids` (any shape)."""
    return int((input_ids == bundle.llava.config.image_token_id).sum())
