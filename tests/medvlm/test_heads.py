"""The findings head: targets from labeler labels, the prompt line, checkpoint round trip, drafts carry it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medvlm.heads import (
    HEAD_SPEC,
    HEAD_WEIGHTS,
    FindingsClassifier,
    HeadSpec,
    default_targets,
    findings_hint,
    predicted_findings,
    targets_from_labels,
)
from medvlm.labeler import label_report


def test_targets_carry_sides_from_the_labeler():
    targets = default_targets()
    y = targets_from_labels(label_report("Small left pleural effusion. Heart size is normal."), targets)
    on = {t for t, v in zip(targets, y, strict=True) if v}
    assert on == {"Pleural Effusion", "Pleural Effusion|left"}
    y = targets_from_labels(label_report("Bilateral pleural effusions. No pneumothorax."), targets)
    on = {t for t, v in zip(targets, y, strict=True) if v}
    assert on == {"Pleural Effusion", "Pleural Effusion|left", "Pleural Effusion|right"}  # negated: not a target
    y = targets_from_labels(label_report("The lungs are clear. No acute cardiopulmonary abnormality."), targets)
    assert {t for t, v in zip(targets, y, strict=True) if v} == {"No Finding"}


def test_hint_words_sides_and_threshold():
    probs = {"Pleural Effusion": 0.9, "Pleural Effusion|left": 0.1, "Pleural Effusion|right": 0.8,
             "Cardiomegaly": 0.7, "Edema": 0.49, "No Finding": 0.95, "Pneumothorax": 0.6,
             "Pneumothorax|left": 0.55, "Pneumothorax|right": 0.52}
    assert predicted_findings(probs) == {"Pleural Effusion": "right", "Cardiomegaly": None, "Pneumothorax": "bilateral"}
    assert findings_hint(probs) == "right pleural effusion, cardiomegaly, bilateral pneumothorax"
    assert findings_hint(probs, threshold=0.95) == "no finding"
    # the side is stated only when the head leans to one
    assert predicted_findings({"Lung Lesion": 0.8, "Lung Lesion|left": 0.1, "Lung Lesion|right": 0.2}) == {
        "Lung Lesion": None}


def test_head_saves_and_reloads_identically(tmp_path):
    import torch
    from transformers import AutoModel, ViTConfig

    tower = AutoModel.from_config(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=64, image_size=32, patch_size=16)).eval()
    spec = HeadSpec(width=32, hidden=16, views=2)
    head = FindingsClassifier.create(spec, seed=3)
    pv = torch.rand(4, 3, 32, 32)  # 2 studies x 2 views
    logits = head.logits(tower, pv)
    assert logits.shape == (2, len(spec.targets))
    head.save(tmp_path)
    assert (tmp_path / HEAD_WEIGHTS).is_file()
    assert json.loads((tmp_path / HEAD_SPEC).read_text())["views"] == 2
    again = FindingsClassifier.load(tmp_path)
    assert again.spec == spec
    assert torch.allclose(again.logits(tower, pv), logits)
    assert FindingsClassifier.load(tmp_path / "none") is None
    with pytest.raises(ValueError, match="tower width"):
        FindingsClassifier.create(HeadSpec(width=48)).logits(tower, pv)


def test_conv_branch_sees_a_small_spot_saves_with_its_statistics_and_ignores_the_batch(tmp_path):
    """The convolutional branch reads the pixels (a 3-px spot changes the logits where the tower's pooled
    tokens barely move); its BatchNorm statistics are saved; in eval mode a study's logits do not depend on
    the other studies of its batch."""
    import torch
    from transformers import AutoModel, ViTConfig

    tower = AutoModel.from_config(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=64, image_size=32, patch_size=16)).eval()
    spec = HeadSpec(width=32, hidden=16, conv=(4, 8))
    head = FindingsClassifier.create(spec, seed=1)
    head.module.train()
    with torch.no_grad():  # one training-mode pass moves the running statistics away from their init
        head.logits(tower, torch.rand(8, 3, 32, 32) * 3)
    head.module.eval()
    pv = torch.rand(5, 3, 32, 32)
    batch = head.logits(tower, pv)
    alone = torch.cat([head.logits(tower, pv[i : i + 1]) for i in range(5)])
    assert torch.allclose(batch, alone, atol=1e-5)
    spot = pv[:1].clone()
    spot[..., 14:17, 14:17] += 2.0
    assert not torch.allclose(head.logits(tower, spot), batch[:1], atol=1e-4)
    head.save(tmp_path)
    again = FindingsClassifier.load(tmp_path)
    assert again.spec.conv == (4, 8) and json.loads((tmp_path / HEAD_SPEC).read_text())["conv"] == [4, 8]
    assert torch.allclose(again.logits(tower, pv), batch, atol=1e-6)  # running statistics came back too
    with pytest.raises(ValueError, match="pixel_values"):
        head.module(torch.zeros(1, 4, 32))


def test_checkpoint_keeps_the_head_and_drafts_carry_probabilities(build_tiny, tmp_path):
    from medvlm.checkpoint import load_checkpoint, save_checkpoint, verify_checkpoint
    from medvlm.errors import CheckpointIntegrityError
    from medvlm.generate import StudyInput, encode_studies, generate_drafts

    bundle = build_tiny()
    width = bundle.llava.config.vision_config.hidden_size
    bundle.head = FindingsClassifier.create(HeadSpec(width=width, hidden=8))
    with __import__("torch").no_grad():  # a head sure of a left effusion whatever the image
        bundle.head.module.mlp[-1].bias.fill_(-8.0)
        for name in ("Pleural Effusion", "Pleural Effusion|left"):
            bundle.head.module.mlp[-1].bias[bundle.head.spec.targets.index(name)] = 8.0
    study = StudyInput(images=[np.random.default_rng(0).random((40, 40), dtype=np.float32)])
    (draft,) = generate_drafts(bundle, [study])
    assert draft.findings_probabilities["Pleural Effusion|left"] > 0.99
    assert draft.findings_probabilities["Cardiomegaly"] < 0.01
    prompt = bundle.tokenizer.decode(encode_studies(bundle, [study])[0]["input_ids"])
    assert "Image classifier: left pleural effusion" in prompt

    manifest = save_checkpoint(bundle, tmp_path / "ckpt")
    assert HEAD_WEIGHTS in manifest["files"] and HEAD_SPEC in manifest["files"]
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.head is not None and loaded.head.spec == bundle.head.spec
    assert generate_drafts(loaded, [study])[0].findings_probabilities == draft.findings_probabilities
    (tmp_path / "ckpt" / HEAD_WEIGHTS).write_bytes(b"tampered")
    with pytest.raises(CheckpointIntegrityError):
        verify_checkpoint(tmp_path / "ckpt")


def test_no_head_no_hint(build_tiny):
    from medvlm.generate import StudyInput, encode_studies, generate_drafts

    bundle = build_tiny()
    study = StudyInput(images=[np.zeros((40, 40), np.float32)])
    assert generate_drafts(bundle, [study])[0].findings_probabilities is None
    assert "Image classifier" not in bundle.tokenizer.decode(encode_studies(bundle, [study])[0]["input_ids"])
