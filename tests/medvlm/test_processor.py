"""Processor: image tokens per view, prior studies, pixel handling, training labels, collation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlm.errors import ImageTokenMismatchError
from medvlm.processor import (
    IGNORE_INDEX,
    check_image_tokens,
    collate,
    encode_question,
    encode_study,
    encode_training_example,
)
from medvlm.prompts import format_report, parse_report, sentence_spans
from medvlm.tokenizer import IMAGE_TOKEN, image_token_id


@pytest.fixture
def bundle(build_tiny):
    return build_tiny(lora={"r": 0})


def _encode(bundle, images, **kwargs):
    cfg = bundle.config
    return encode_study(
        bundle.processor,
        cfg.prompt,
        images,
        image_seq_length=cfg.image_seq_length,
        max_views=cfg.max_views,
        **kwargs,
    )


def _n_image_tokens(bundle, ids):
    return int((ids == image_token_id(bundle.tokenizer)).sum())


@pytest.mark.parametrize(("n_views", "n_prior"), [(1, 0), (2, 0), (2, 1), (1, 2)])
def test_views_and_prior_give_views_times_seq_length_tokens(bundle, make_image, n_views, n_prior):
    enc = _encode(
        bundle,
        [make_image(i) for i in range(n_views)],
        prior_images=[make_image(10 + i, (50, 30)) for i in range(n_prior)],
        prior_report="FINDINGS: Clear lungs." if n_prior else None,
    )
    seq = bundle.config.image_seq_length
    assert _n_image_tokens(bundle, enc["input_ids"]) == (n_views + n_prior) * seq
    assert enc["pixel_values"].shape == (n_views + n_prior, 3, 32, 32)
    # and the model accepts exactly that
    with torch.no_grad():
        bundle.model(input_ids=enc["input_ids"][None], pixel_values=enc["pixel_values"])


def test_prior_report_and_indication_reach_the_prompt(bundle, make_image):
    enc = _encode(bundle, [make_image()], prior_report="Old effusion.", indication="fever")
    text = bundle.tokenizer.decode(enc["input_ids"])
    assert "Prior report: Old effusion." in text
    assert "Indication: fever" in text
    assert text.rstrip().endswith("<|assistant|>")


def test_mismatch_raises_value_error_with_both_numbers(bundle, make_image):
    enc = _encode(bundle, [make_image(0), make_image(1)])
    with pytest.raises(ValueError, match=r"\(32\).*\(3 images x 16 = 48\)") as info:
        check_image_tokens(enc["input_ids"], 3, 16, image_token_id(bundle.tokenizer))
    assert isinstance(info.value, ImageTokenMismatchError)
    # the model itself refuses too (features of 1 image for tokens of 2)
    with pytest.raises(Exception, match="do not match"):
        bundle.model(input_ids=enc["input_ids"][None], pixel_values=enc["pixel_values"][:1])


def test_image_placeholder_in_free_text_cannot_add_an_image(bundle, make_image):
    enc = _encode(
        bundle, [make_image()], indication=f"cough {IMAGE_TOKEN} <|assistant|>", prior_report=IMAGE_TOKEN
    )
    assert _n_image_tokens(bundle, enc["input_ids"]) == bundle.config.image_seq_length


def test_pixels_are_replicated_and_normalised_without_rescale(bundle):
    img = np.full((40, 30), 0.25, dtype=np.float32)
    pv = _encode(bundle, [img])["pixel_values"]
    assert torch.allclose(pv, torch.full_like(pv, (0.25 - 0.5) / 0.5), atol=1e-5)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8, 3), np.float32), "2-D"),
        (np.zeros((8, 8), np.uint8), "float"),
        (np.full((8, 8), 2.0, np.float32), r"\[0, 1\]"),
        (np.full((8, 8), np.nan, np.float32), "finite"),
    ],
)
def test_bad_images_are_refused(bundle, image, message):
    with pytest.raises(ValueError, match=message):
        _encode(bundle, [image])


def test_view_count_limits(bundle, make_image):
    with pytest.raises(ValueError, match="max_views"):
        _encode(bundle, [])
    with pytest.raises(ValueError, match="max_views"):
        _encode(bundle, [make_image(i) for i in range(4)])


def test_training_labels_supervise_only_the_report(bundle, make_image):
    enc = _encode(bundle, [make_image()])
    report = format_report("Heart normal.", "No acute disease.")
    ex = encode_training_example(bundle.processor, enc, report, max_length=1024)
    n_prompt = enc["input_ids"].numel()
    assert torch.equal(ex["input_ids"][:n_prompt], enc["input_ids"])
    assert (ex["labels"][:n_prompt] == IGNORE_INDEX).all()
    supervised = ex["labels"][n_prompt:]
    assert (supervised != IGNORE_INDEX).all()
    assert supervised[-1].item() == bundle.tokenizer.eos_token_id
    decoded = bundle.tokenizer.decode(supervised, skip_special_tokens=False)
    assert decoded == report + "<|end|></s>"
    with pytest.raises(ValueError, match="max_length"):
        encode_training_example(bundle.processor, enc, report, max_length=n_prompt + 2)


def test_collate_pads_right_for_training_and_left_for_generation(bundle, make_image):
    short = encode_training_example(
        bundle.processor, _encode(bundle, [make_image()]), "FINDINGS: a", max_length=1024
    )
    long = encode_training_example(
        bundle.processor, _encode(bundle, [make_image(), make_image(1)]), "FINDINGS: a b c d", max_length=1024
    )
    pad = bundle.tokenizer.pad_token_id
    batch = collate([short, long], pad)
    n = short["input_ids"].numel()
    assert batch["input_ids"].shape == (2, long["input_ids"].numel())
    assert batch["pixel_values"].shape[0] == 3 and batch["n_images"] == [1, 2]
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all() and (batch["input_ids"][0, n:] == pad).all()
    assert (batch["attention_mask"][0, n:] == 0).all() and (batch["attention_mask"][1] == 1).all()
    left = collate([short, long], pad, padding_side="left")
    assert torch.equal(left["input_ids"][0, -n:], short["input_ids"])
    assert (left["attention_mask"][0, :-n] == 0).all()
    out = bundle.model(**{k: v for k, v in batch.items() if k != "n_images"})
    assert torch.isfinite(out.loss)


def test_question_history_goes_into_the_prompt(bundle, make_image):
    cfg = bundle.config
    kwargs = {"image_seq_length": cfg.image_seq_length, "max_views": cfg.max_views}
    first = encode_question(bundle.processor, cfg.prompt, [make_image()], "Is there an effusion?", **kwargs)
    second = encode_question(
        bundle.processor,
        cfg.prompt,
        [make_image()],
        "Which side?",
        history=[("Is there an effusion?", "Yes.")],
        **kwargs,
    )
    text = bundle.tokenizer.decode(second["input_ids"])
    assert text.index("Is there an effusion?") < text.index("Yes.") < text.index("Which side?")
    assert _n_image_tokens(bundle, second["input_ids"]) == _n_image_tokens(bundle, first["input_ids"])


def test_processor_round_trips_through_auto_processor(bundle, make_image, tmp_path):
    from transformers import AutoProcessor

    bundle.processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
    cfg = bundle.config
    a = _encode(bundle, [make_image()], indication="x")
    b = encode_study(loaded, cfg.prompt, [make_image()], image_seq_length=16, max_views=3, indication="x")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])


def test_parse_report_and_sentences():
    sections = parse_report(format_report("Heart normal.  Lungs clear.", "No disease."))
    assert sections.findings == "Heart normal. Lungs clear."
    assert sections.impression == "No disease."
    assert parse_report("no headers here").findings == "no headers here"
    assert parse_report("impression: only this").impression == "only this"
    text = "One. Two!  Three"
    assert [text[s:e] for s, e in sentence_spans(text)] == ["One.", "Two!", "Three"]
