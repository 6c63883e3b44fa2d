"""Generation: left-padded batches equal single studies, confidences, streaming, VQA, learning a mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvlm.build import freeze_for_stage
from medvlm.confidence import section_ranges, sentence_confidences
from medvlm.config import GenerationSettings
from medvlm.generate import (
    StudyInput,
    _strip_pieces,
    answer_question,
    generate_drafts,
    stream_answer,
    stream_draft,
)
from medvlm.processor import collate, encode_study, encode_training_example
from medvlm.prompts import format_report


@pytest.fixture
def bundle(build_tiny, perturb_lora):
    b = build_tiny(generation={"max_new_tokens": 12})
    perturb_lora(b.model)
    return b


def _studies(make_image):
    return [
        StudyInput([make_image(0)]),
        StudyInput([make_image(1), make_image(2)], indication="shortness of breath for three days"),
        StudyInput([make_image(3)], prior_images=[make_image(4)], prior_report="FINDINGS: Small effusion."),
    ]


def test_batch_of_three_equals_one_at_a_time(bundle, make_image):
    studies = _studies(make_image)
    lengths = {
        encode_study(
            bundle.processor,
            bundle.config.prompt,
            s.images,
            image_seq_length=16,
            max_views=3,
            prior_images=s.prior_images,
            prior_report=s.prior_report,
            indication=s.indication,
        )["input_ids"].numel()
        for s in studies
    }
    assert len(lengths) == 3, "prompts must differ in length so that left padding is exercised"
    batched = generate_drafts(bundle, studies, min_new_tokens=12)
    single = [generate_drafts(bundle, [s], min_new_tokens=12)[0] for s in studies]
    assert [d.n_tokens for d in batched] == [12, 12, 12]
    assert [d.text for d in batched] == [d.text for d in single]
    for a, b in zip(batched, single, strict=True):
        assert [s.confidence for s in a.sentences] == pytest.approx(
            [s.confidence for s in b.sentences], abs=1e-4
        )


def test_confidences_are_probabilities(bundle, make_image):
    (draft,) = generate_drafts(bundle, [StudyInput([make_image(0)])], min_new_tokens=12)
    assert draft.sentences
    for s in draft.sentences:
        assert 0.0 < s.confidence <= 1.0
        assert s.min_prob <= s.confidence + 1e-9
        assert s.mean_logprob <= 0.0


def test_beam_search_runs_and_scores(bundle, make_image):
    settings = GenerationSettings(max_new_tokens=6, num_beams=3)
    drafts = generate_drafts(bundle, _studies(make_image)[:2], settings)
    assert len(drafts) == 2
    assert all(0.0 < s.confidence <= 1.0 for d in drafts for s in d.sentences)


def test_sentence_confidence_mean_and_min(tiny_tokenizer):
    text = "FINDINGS: Heart normal. Small effusion.\nIMPRESSION: Effusion."
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    effusion_start = text.index("Small")
    ends = [len(tiny_tokenizer.decode(ids[: i + 1])) for i in range(len(ids))]
    doubtful = next(i for i, e in enumerate(ends) if e > effusion_start)  # first token of "Small effusion."
    lps = [math.log(0.5)] * len(ids)
    lps[doubtful] = math.log(0.01)
    decoded, sentences = sentence_confidences(tiny_tokenizer, ids, lps, "mean")
    assert decoded == text
    assert [(s.section, s.text) for s in sentences] == [
        ("findings", "Heart normal."),
        ("findings", "Small effusion."),
        ("impression", "Effusion."),
    ]
    assert sentences[0].confidence == pytest.approx(0.5)
    assert sentences[1].confidence < 0.5 and sentences[1].min_prob == pytest.approx(0.01)
    _, strict = sentence_confidences(tiny_tokenizer, ids, lps, "min")
    assert strict[1].confidence == pytest.approx(0.01) and strict[0].confidence == pytest.approx(0.5)
    with pytest.raises(ValueError, match="log-probabilities"):
        sentence_confidences(tiny_tokenizer, ids, lps[:-1])


def test_section_ranges_skip_headers():
    text = "FINDINGS: a. IMPRESSION: b."
    assert [(s, text[a:b].strip()) for s, a, b in section_ranges(text)] == [
        ("findings", "a."),
        ("impression", "b."),
    ]


def test_streaming_yields_the_greedy_text(bundle, make_image):
    study = StudyInput([make_image(0)], indication="fever")
    pieces = list(stream_draft(bundle, study))
    assert len(pieces) >= 1
    assert "".join(pieces) == generate_drafts(bundle, [study])[0].text


def test_streaming_surfaces_errors(bundle, make_image):
    with pytest.raises(ValueError, match="max_views"):
        list(stream_draft(bundle, StudyInput([])))


def test_answer_question_with_history(bundle, make_image):
    images = [make_image(0)]
    answer = answer_question(bundle, images, "Is there an effusion?", history=[("Any pneumothorax?", "No.")])
    assert isinstance(answer.text, str)
    assert 0.0 <= answer.confidence <= 1.0


def test_stream_answer_yields_the_greedy_answer_and_its_confidence(bundle, make_image):
    images = [make_image(0), make_image(1)]
    history = [("Any pneumothorax?", "No.")]
    got = []
    pieces = list(stream_answer(bundle, images, "Is there an effusion?", history, on_answer=got.append))
    greedy = answer_question(bundle, images, "Is there an effusion?", history)
    assert greedy.text, "the perturbed tiny model must say something for the comparison to mean anything"
    assert "".join(pieces) == greedy.text
    (streamed,) = got  # the same generation's log-probabilities: the confidence agrees
    assert streamed.text == greedy.text
    assert streamed.confidence == pytest.approx(greedy.confidence, abs=1e-4)
    assert [s.text for s in streamed.sentences] == [s.text for s in greedy.sentences]


def test_stream_answer_is_greedy_even_when_settings_say_beams(bundle, make_image):
    images = [make_image(2)]
    beams = GenerationSettings(max_new_tokens=8, num_beams=3)
    greedy = answer_question(bundle, images, "Is there an effusion?", settings=GenerationSettings(max_new_tokens=8))
    assert "".join(stream_answer(bundle, images, "Is there an effusion?", settings=beams)) == greedy.text


def test_stream_answer_surfaces_errors(bundle, make_image):
    with pytest.raises(ValueError, match="max_views"):
        list(stream_answer(bundle, [], "Is there an effusion?"))


def test_strip_pieces_streams_the_stripped_text():
    pieces = ["", "  ", " Small", " left ", " ", "effusion.", "  \n", " "]
    out = list(_strip_pieces(iter(pieces)))
    assert "".join(out) == "".join(pieces).strip() == "Small left  effusion."
    assert out[0] == "Small"  # the first visible piece is not held back
    assert list(_strip_pieces(iter(["  ", "\n"]))) == []


def _train(bundle, examples, steps, lr=3e-3):
    freeze_for_stage(bundle.model, 0)  # a random tiny decoder: everything trains
    params = [p for p in bundle.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    batch = collate(examples, bundle.tokenizer.pad_token_id)
    batch.pop("n_images")
    bundle.model.train()
    for _ in range(steps):
        loss = bundle.model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def test_image_conditions_the_report_after_training(build_tiny):
    """Two images, two reports: after a short fit, each image yields its own report (the image is read)."""
    bundle = build_tiny(generation={"max_new_tokens": 40}, lora={"r": 0})
    bright = np.full((32, 32), 0.9, dtype=np.float32)
    dark = np.full((32, 32), 0.1, dtype=np.float32)
    reports = {
        "bright": format_report("The heart is enlarged.", "Cardiomegaly."),
        "dark": format_report("The lungs are clear.", "No acute disease."),
    }
    cfg = bundle.config
    examples = []
    for img, key in ((bright, "bright"), (dark, "dark")):
        enc = encode_study(bundle.processor, cfg.prompt, [img], image_seq_length=16, max_views=3)
        examples.append(encode_training_example(bundle.processor, enc, reports[key], max_length=1024))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is as fast and far steadier on shared cores
    try:
        loss = _train(bundle, examples, steps=60, lr=5e-3)
    finally:
        torch.set_num_threads(threads)
    assert loss < 0.1
    d_bright, d_dark = generate_drafts(bundle, [StudyInput([bright]), StudyInput([dark])])
    assert (d_bright.findings, d_bright.impression) == ("The heart is enlarged.", "Cardiomegaly.")
    assert (d_dark.findings, d_dark.impression) == ("The lungs are clear.", "No acute disease.")
    assert all(s.confidence > 0.5 for s in d_bright.sentences)
