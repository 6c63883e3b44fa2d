"""Training recipes: stage flags, loss goes down, resume equivalence, errors before training, bf16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medvlm.errors import ConfigError
from pipelines.training.config import load_train_config

REPO_ROOT = Path(__file__).resolve().parents[3]

TINY = REPO_ROOT / "pipelines" / "configs" / "train_tiny.yaml"


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    from pipelines.phantoms import PhantomConfig, generate_phantoms

    out = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(out, n=8, seed=1, progress=False, config=PhantomConfig(size=64))
    return out


def _tiny(phantom_dir, tmp_path, *extra):
    return load_train_config(TINY, [f"data.dir={phantom_dir}", f"out_dir={tmp_path / 'run'}", *extra])


@pytest.fixture
def tiny_bundle(phantom_dir, tmp_path):
    from pipelines.training.bundles import build_bundle
    from pipelines.training.datasets import ImageCache, StudyDataset, load_records
    from pipelines.training.runtime import setup_runtime

    cfg = _tiny(phantom_dir, tmp_path, "data.augment.enabled=false")
    rt = setup_runtime(cfg)
    ds = StudyDataset(load_records(phantom_dir, "train"), ImageCache(cfg.model.image_size), 2)
    return cfg, rt, ds, build_bundle(cfg, ds, tmp_path / "s1", rt)


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_stage_flags_choose_what_trains(tiny_bundle):
    import dataclasses

    from medvlm.build import freeze_for_stage
    from pipelines.recipes.projector import set_trainable

    cfg, _, _, bundle = tiny_bundle
    frozen = dataclasses.replace(cfg.projector, train_decoder="frozen")
    names = _trainable(bundle.model) if set_trainable(bundle.model, frozen) else set()
    assert names and all("multi_modal_projector" in n for n in names)
    set_trainable(bundle.model, cfg.projector)  # full decoder
    names = _trainable(bundle.model)
    assert any("language_model" in n for n in names) and any("lm_head" in n for n in names)
    assert not any("vision_tower" in n or "lora_" in n for n in names)
    set_trainable(bundle.model, dataclasses.replace(cfg.projector, train_vision=True))
    assert any("vision_tower" in n for n in _trainable(bundle.model))
    freeze_for_stage(bundle.model, 2)
    names = _trainable(bundle.model)
    assert all("lora_" in n or "multi_modal_projector" in n for n in names)
    assert any("lora_" in n for n in names)


@pytest.mark.parametrize("stage", ["projector", "lora"])
def test_llava_stages_reduce_loss_on_a_fixed_batch(tiny_bundle, stage):
    import torch

    from medvlm.build import freeze_for_stage
    from pipelines.recipes.projector import set_trainable
    from pipelines.training.examples import ExampleBuilder

    cfg, rt, ds, bundle = tiny_bundle
    if stage == "projector":
        params = set_trainable(bundle.model, cfg.projector)
    else:
        freeze_for_stage(bundle.model, 2)
        params = [p for p in bundle.model.parameters() if p.requires_grad]
    builder = ExampleBuilder(bundle, ds, None, 0, 0.5 if stage == "lora" else 0.0, "cpu")
    batch = builder.batch([0, 1], step=0)
    opt = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for _ in range(6):
        loss = bundle.model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.05, losses
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses


@pytest.mark.parametrize("target_temperature", [None, 0.05], ids=["identity", "soft"])
def test_contrastive_loss_decreases_on_a_fixed_batch(phantom_dir, tmp_path, target_temperature):
    import torch

    from pipelines.recipes.contrastive import ContrastiveModel, build_tower
    from pipelines.training.datasets import ImageCache, StudyDataset, load_records
    from pipelines.training.examples import pixel_values

    cfg = _tiny(phantom_dir, tmp_path)
    ds = StudyDataset(load_records(phantom_dir), ImageCache(cfg.model.image_size), 1)
    text = torch.nn.functional.normalize(torch.randn(len(ds), 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    model = ContrastiveModel.build(build_tower(cfg.model)[0], 16, 0.07, False, seed=0,
                                   target_temperature=target_temperature)
    pv = pixel_values([ds.images(i)[0] for i in range(len(ds))], cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(pv, text)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] * 0.9, losses


def _final_weights(run_dir: Path) -> dict:
    from safetensors.numpy import load_file

    ckpt = run_dir / "checkpoint"
    out = load_file(str(ckpt / "model.safetensors"))
    out.update({f"adapter.{k}": v for k, v in load_file(str(ckpt / "adapter" / "adapter_model.safetensors")).items()})
    return out


@pytest.mark.slow  # ~30 s: four restarted processes-worth of tiny runs
def test_resume_ends_where_an_unbroken_run_ends(phantom_dir, tmp_path):
    from pipelines.recipes.train import run_training

    common = ["evaluate.enabled=false", "contrastive.steps=3", "projector.steps=3", "lora.steps=3"]
    unbroken = _tiny(phantom_dir, tmp_path / "a", *common)
    summary = run_training(unbroken)
    assert not summary["stopped"]
    runs = 0
    while True:  # killed after every 2 steps, restarted with the same command
        s = run_training(_tiny(phantom_dir, tmp_path / "b", *common, "stop_after=2"))
        runs += 1
        if not s["stopped"]:
            break
        assert runs < 6
    assert runs == 4  # 9 steps, 2 per process, stages ending early count as a stop
    a, b = _final_weights(tmp_path / "a" / "run"), _final_weights(tmp_path / "b" / "run")
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    assert worst <= 1e-6
    trained = summary["stages"]["lora"]
    assert trained["steps_done"] == 3 and trained["finished"]


def test_too_long_reports_fail_before_training_with_the_flag_to_change(phantom_dir, tmp_path):
    from pipelines.recipes.train import run_training

    cfg = load_train_config(TINY, [f"data.dir={phantom_dir}", f"out_dir={tmp_path / 'run'}", "tracking=none",
                                   "stages=[projector]", "model.tokenizer.max_length=40", "evaluate.enabled=false"])
    with pytest.raises(ConfigError, match="model.tokenizer.max_length"):
        run_training(cfg)


def test_bfloat16_autocast_trains_on_cpu(phantom_dir, tmp_path):
    """precision=bfloat16 runs the stage under torch.autocast (this CPU has bf16 units; CUDA gets it by default)."""
    import math

    from pipelines.recipes.train import run_training

    cfg = load_train_config(TINY, [f"data.dir={phantom_dir}", f"out_dir={tmp_path / 'run'}", "tracking=none",
                                   "stages=[projector]", "projector.steps=3", "precision=bfloat16",
                                   "evaluate.enabled=false", "register=false"])
    summary = run_training(cfg)
    stage = summary["stages"]["projector"]
    assert stage["steps_done"] == 3
    assert math.isfinite(stage["first_loss"]) and math.isfinite(stage["last_loss"])
