"""Every supported family, end to end on a tiny random checkpoint: load -> draft -> ask -> LoRA step -> reload."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import FAMILIES

from medvlm import chat
from medvlm.adapters import apply_lora, load_adapter, merge_adapter, save_adapter
from medvlm.build import freeze_for_stage
from medvlm.config import GenerationSettings, LoraSettings
from medvlm.generate import StudyInput, answer_question, generate_drafts, stream_answer, stream_draft
from medvlm.loading import load_model, load_vlm
from medvlm.prompts import format_report

SETTINGS = GenerationSettings(max_new_tokens=5, batch_size=2)
REPORT = format_report("The heart is normal in size. The lungs are clear.", "No acute disease.")


def _img(seed: int, shape: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


STUDIES = [
    StudyInput([_img(1, (40, 36)), _img(2, (36, 40))], indication="cough and fever for three days, short of breath on exertion"),
    StudyInput([_img(3, (48, 48))], prior_images=[_img(4, (40, 40))], prior_report="Lungs clear."),
]


@pytest.fixture(scope="module")
def loaded(family_dir):
    """Function: family -> its bundle, loaded once per module."""
    cache: dict = {}

    def _get(family: str):
        if family not in cache:
            cache[family] = load_vlm(family_dir(family))
        return cache[family]

    return _get


@pytest.mark.parametrize("family", FAMILIES)
def test_load_draft_stream(family, loaded, family_dir):
    bundle = loaded(family)
    assert bundle.family.name == family and bundle.source["remote_code"] == {}
    assert load_model(family_dir(family)).family.name == family  # the one entry point picks load_vlm
    batched = generate_drafts(bundle, STUDIES, SETTINGS)
    alone = [generate_drafts(bundle, [s], SETTINGS)[0] for s in STUDIES]
    lengths = {chat.encode_study(bundle, s.images, prior_images=s.prior_images, prior_report=s.prior_report,
                                 indication=s.indication)["input_ids"].shape[-1] for s in STUDIES}
    assert len(lengths) == 2  # really padded: the two prompts differ in length
    for b, a in zip(batched, alone, strict=True):
        assert (b.text, b.n_tokens) == (a.text, a.n_tokens)
        assert [s.confidence for s in b.sentences] == pytest.approx([s.confidence for s in a.sentences], abs=1e-4)
        assert all(0.0 <= s.confidence <= 1.0 for s in b.sentences)
        assert b.n_tokens >= 1
    assert "".join(stream_draft(bundle, STUDIES[0], SETTINGS)) == batched[0].text


@pytest.mark.parametrize("family", FAMILIES)
def test_ask_multi_turn(family, loaded):
    bundle = loaded(family)
    images = list(STUDIES[0].images)
    history = [("Is there a pleural effusion?", "No.")]
    answer = answer_question(bundle, images, "Is the heart enlarged?", history, SETTINGS)
    got = []
    streamed = "".join(stream_answer(bundle, images, "Is the heart enlarged?", history, SETTINGS, on_answer=got.append))
    assert streamed == answer.text and got[0].text == answer.text
    assert 0.0 <= answer.confidence <= 1.0
    enc = chat.encode_question(bundle, images, "Is the heart enlarged?", history)
    text = bundle.tokenizer.decode(enc["input_ids"][0])
    assert "Is there a pleural effusion?" in text and "Is the heart enlarged?" in text


def _logits(bundle, batch) -> torch.Tensor:
    bundle.model.eval()
    with torch.no_grad():
        return bundle.model(**{k: v for k, v in batch.items() if k != "labels"}).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_step_save_reload_merge(family, loaded, family_dir, tmp_path):
    base = loaded(family)
    bundle = apply_lora(load_vlm(family_dir(family)), LoraSettings(r=4, alpha=8, dropout=0.0))
    adapted = {n for n, m in bundle.model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}
    assert adapted and all(".self_attn." in n and bundle.family.decoder.split("\\.")[-1] in n for n in adapted)
    # peft leaves only the adapters trainable: everything that trains is in the saved adapter
    assert {n for n, p in bundle.model.named_parameters() if p.requires_grad} <= {
        n for n, _ in bundle.model.named_parameters() if "lora_" in n}

    turns = chat.turn_format(bundle)
    examples = [chat.encode_training_example(bundle, chat.encode_study(bundle, s.images), REPORT) for s in STUDIES]
    supervised = examples[0]["labels"][examples[0]["labels"] != chat.IGNORE_INDEX]
    target = bundle.tokenizer(turns.answer_prefix + REPORT + turns.end_of_turn, add_special_tokens=False)["input_ids"]
    assert supervised.tolist() == target  # labels only on the answer and the template's end of turn
    batch = chat.collate(bundle, examples, padding_side="right")
    optimizer = torch.optim.AdamW([p for p in bundle.model.parameters() if p.requires_grad], lr=1e-2)
    bundle.model.train()
    loss = bundle.model(**batch).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)

    logits = _logits(bundle, batch)
    assert not torch.allclose(logits, _logits(base, batch))  # the step changed the model
    save_adapter(bundle, tmp_path / "adapter")
    reloaded = load_adapter(load_vlm(family_dir(family)), tmp_path / "adapter")
    torch.testing.assert_close(_logits(reloaded, batch), logits, rtol=0, atol=1e-5)
    before = [d.text for d in generate_drafts(reloaded, STUDIES[:1], SETTINGS)]
    merged = merge_adapter(reloaded)
    assert merged.model is merged.base_model  # no peft wrapper left
    assert [d.text for d in generate_drafts(merged, STUDIES[:1], SETTINGS)] == before


@pytest.mark.parametrize("family", FAMILIES)
def test_freeze_stages_follow_the_family_table(family, family_dir):
    bundle = apply_lora(load_vlm(family_dir(family)), LoraSettings(r=2, alpha=4))
    freeze_for_stage(bundle.model, 1, bundle.family)
    stage1 = {n for n, p in bundle.model.named_parameters() if p.requires_grad}
    assert stage1 and all(re.search(bundle.family.projector, n) for n in stage1)
    freeze_for_stage(bundle.model, 2, bundle.family)
    stage2 = {n for n, p in bundle.model.named_parameters() if p.requires_grad}
    assert stage1 < stage2 and all("lora_" in n for n in stage2 - stage1)
    assert not any(re.search(bundle.family.vision, n) and "lora_" in n for n in stage2)
