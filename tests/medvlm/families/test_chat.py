"""Family-agnostic pieces: report parsing without headers, image conversion, batch padding, beam search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlm import chat
from medvlm.confidence import sentence_confidences
from medvlm.config import GenerationSettings
from medvlm.generate import StudyInput, generate_drafts
from medvlm.loading import load_vlm
from medvlm.prompts import parse_report, report_spans


@pytest.mark.parametrize(
    ("text", "findings", "impression"),
    [
        ("The heart is normal. The lungs are clear. No acute disease.",
         "The heart is normal. The lungs are clear.", "No acute disease."),
        ("Lungs clear.\n**Impression:** no pneumonia.", "Lungs clear.", "no pneumonia."),
        ("Findings are consistent with edema.\nConclusion\nPulmonary edema.",
         "Findings are consistent with edema.", "Pulmonary edema."),
        ("Small effusion.\nImpression - small left effusion.", "Small effusion.", "small left effusion."),
        ("A single sentence without headers", "A single sentence without headers", ""),
        ("FINDINGS: Heart normal.\nIMPRESSION: Normal.", "Heart normal.", "Normal."),
    ],
)
def test_parse_report_splits_any_style(text, findings, impression):
    sections = parse_report(text)
    assert (sections.findings, sections.impression) == (findings, impression)
    assert sections.headers == ("FINDINGS:" in text or "mpression" in text or "Conclusion" in text)


def test_draft_sentences_carry_the_fallback_sections(tiny_tokenizer):
    text = "The heart is normal. The lungs are clear. No acute disease."
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    _, sentences = sentence_confidences(tiny_tokenizer, ids, [-0.1] * len(ids), report=True)
    assert [s.section for s in sentences] == ["findings", "findings", "impression"]
    assert [s for s, _, _ in report_spans("")] == []


def test_grey_floats_become_uint8_rgb_for_a_rescaling_processor(family_dir):
    bundle = load_vlm(family_dir("llava"))
    ramp = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    rgb = chat.as_processor_image(ramp, bundle.processor.image_processor)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 4, 3) and rgb.min() == 0 and rgb.max() == 255
    for bad in (np.zeros((3, 4, 3), np.float32), np.full((3, 4), 2.0, np.float32), np.zeros((3, 4), np.uint8)):
        with pytest.raises(ValueError, match="image"):
            chat.as_processor_image(bad, bundle.processor.image_processor)


def test_collate_pads_tokens_on_the_side_and_other_ragged_dims_with_zeros(family_dir):
    bundle = load_vlm(family_dir("mllama"))
    short = {"input_ids": torch.tensor([[5, 6]]), "cross_attention_mask": torch.ones(1, 2, 1, 2, dtype=torch.long),
             "pixel_values": torch.ones(1, 1, 2, 3, 4, 4)}
    long = {"input_ids": torch.tensor([[7, 8, 9]]), "cross_attention_mask": torch.ones(1, 3, 2, 2, dtype=torch.long),
            "pixel_values": torch.ones(1, 2, 2, 3, 4, 4)}
    batch = chat.collate(bundle, [short, long], padding_side="left")
    pad = bundle.tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[pad, 5, 6], [7, 8, 9]]
    assert batch["cross_attention_mask"].shape == (2, 3, 2, 2)
    assert batch["cross_attention_mask"][0, 0].sum() == 0 and batch["cross_attention_mask"][0, 1:, 1].sum() == 0
    assert batch["pixel_values"].shape == (2, 2, 2, 3, 4, 4) and batch["pixel_values"][0, 1].sum() == 0


@pytest.mark.parametrize("family", ["qwen2_vl", "gemma3"])
def test_beam_search_drafts(family, family_dir):
    bundle = load_vlm(family_dir(family))
    study = StudyInput([np.random.default_rng(0).random((40, 40), dtype=np.float32)])
    (draft,) = generate_drafts(bundle, [study], GenerationSettings(max_new_tokens=4, num_beams=2))
    assert 1 <= draft.n_tokens <= 4 and all(0 <= s.confidence <= 1 for s in draft.sentences)
