"""Stage 0b (`pipelines.recipes.classify`): the findings head trains, resumes exactly, and rides along to drafts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
TINY = REPO_ROOT / "pipelines" / "configs" / "train_tiny.yaml"


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from pipelines.phantoms import PhantomConfig, generate_phantoms

    data = tmp_path_factory.mktemp("cls") / "phantoms"
    generate_phantoms(data, n=6, seed=2, progress=False, config=PhantomConfig(size=64))
    return data


def _argv(data: Path, out: Path, *extra: str) -> list[str]:
    return [str(TINY), f"data.dir={data}", f"out_dir={out}", "classify.steps=4", "classify.batch_size=4",
            "classify.checkpoint_every=0", "classify.hidden=8", "projector.steps=1", "data.augment.enabled=true", *extra]


def test_batch_augment_is_seeded_bounded_and_never_flips():
    import torch

    from pipelines.recipes.classify import batch_augment
    from pipelines.training.transforms import AugmentConfig

    img = torch.zeros(8, 1, 32, 32)
    img[..., :, :8] = 1.0  # a bright band on the image's left
    cfg = AugmentConfig(rotate_degrees=5.0, translate_fraction=0.04, affine_prob=1.0)
    a, b = batch_augment(img, cfg, seed=5), batch_augment(img, cfg, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, batch_augment(img, cfg, seed=6))
    assert a.min() >= 0 and a.max() <= 1 and a.shape == img.shape
    assert (a[..., :, :12].mean(dim=(1, 2, 3)) > a[..., :, -12:].mean(dim=(1, 2, 3))).all()  # still on the left
    assert torch.equal(batch_augment(img, AugmentConfig(enabled=False), seed=5), img)


def test_classify_alone_then_projector_attaches_head(phantoms, tmp_path, capsys):
    from medvlm.checkpoint import load_checkpoint
    from medvlm.heads import HEAD_SPEC, HEAD_WEIGHTS
    from pipelines.recipes import classify, projector

    out = tmp_path / "run"
    classify.main(_argv(phantoms, out, "classify.balance=true"))
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["stages"]["classify"]["steps_done"] == 4 and not printed["stopped"]
    stage = out / "stage0b_classify"
    assert (stage / HEAD_WEIGHTS).is_file() and (stage / "vision_tower.safetensors").is_file()
    assert json.loads((stage / HEAD_SPEC).read_text())["hidden"] == 8
    classify.main(_argv(phantoms, out, "classify.balance=true"))  # done: skipped, nothing retrains
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stages"]["classify"]["skipped"] == "done"

    projector.main(_argv(phantoms, out))  # picks up the classify stage's tower and head
    bundle = load_checkpoint(out / "stage1_projector" / "checkpoint")
    assert bundle.head is not None and bundle.head.spec.hidden == 8
    from safetensors.torch import load_file

    tower = load_file(str(stage / "vision_tower.safetensors"))
    key = next(iter(tower))
    assert np.allclose(bundle.llava.model.vision_tower.state_dict()[key].numpy(), tower[key].numpy())


def test_classify_resume_ends_where_an_unbroken_run_ends(phantoms, tmp_path):
    from safetensors.torch import load_file

    from medvlm.heads import HEAD_WEIGHTS
    from pipelines.recipes import classify

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    conv = "classify.conv=[4, 8]"  # the convolutional branch: its BatchNorm running statistics resume too
    classify.main(_argv(phantoms, whole, conv))
    classify.main(_argv(phantoms, broken, conv, "stop_after=1"))
    assert not (broken / "stage0b_classify" / HEAD_WEIGHTS).exists()
    classify.main(_argv(phantoms, broken, conv))
    a = load_file(str(whole / "stage0b_classify" / HEAD_WEIGHTS))
    b = load_file(str(broken / "stage0b_classify" / HEAD_WEIGHTS))
    assert any("running_mean" in k for k in a) and a.keys() == b.keys()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_config_rejects_bad_classify_settings():
    from medvlm.errors import ConfigError
    from pipelines.training.config import load_train_config

    with pytest.raises(ConfigError, match="classify.views"):
        load_train_config(TINY, ["classify.views=3"])
    with pytest.raises(ConfigError, match="classify.conv"):
        load_train_config(TINY, ["classify.conv=[8, 0]"])
    with pytest.raises(ConfigError, match="order"):
        load_train_config(TINY, ["stages=[projector, classify]"])
