"""Stage "pretrain" with the joint-embedding objectives (DINO, SimCLR): training, exact resume, the saved tower."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from medvlm.config import ModelConfig
from medvlm.errors import ConfigError
from pipelines.recipes import pretrain
from pipelines.recipes.pretrain_ssl import SslConfig, build_joint_embedding, random_views
from pipelines.training.transforms import AugmentConfig
from tests.pipelines.recipes.test_pretrain import TINY, _images, _tower_weights, run_two_ranks

SSL = {"local_crops": 2, "local_size": 16, "out_dim": 64, "head_hidden": 32, "head_bottleneck": 16}
TINY_SSL = {**TINY, "pretrain": {"steps": 4, "batch_size": 4, "checkpoint_every": 0, "objective": "dino", "ssl": SSL,
                                 "optim": {"lr": 1e-3, "warmup_steps": 0}}}


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Eight shared Kermany radiographs (4 NORMAL, 4 PNEUMONIA) when present, else generated chest-like PNGs."""
    from tests.conftest import shared_data_dir

    shared = shared_data_dir()
    kermany = shared / "kermany" if shared is not None else None
    if kermany is None or not kermany.is_dir():
        return _images(tmp_path / "generated")
    sample = tmp_path / "kermany_sample"
    sample.mkdir()
    for p in sorted((kermany / "NORMAL").glob("*.jpeg"))[:4] + sorted((kermany / "PNEUMONIA").glob("*.jpeg"))[:4]:
        (sample / p.name).write_bytes(p.read_bytes())
    return sample


def _config(tmp_path: Path, data: Path, name: str, objective: str = "dino") -> Path:
    cfg = {**TINY_SSL, "out_dir": str(tmp_path / name), "data": {"dir": str(data)},
           "pretrain": {**TINY_SSL["pretrain"], "objective": objective}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _tiny_tower():
    from pipelines.recipes.contrastive import build_tower

    return build_tower(ModelConfig.from_dict(TINY["model"]))[0]


@pytest.mark.parametrize("objective", ["dino", "simclr"])
def test_tiny_run_saves_a_tower_the_later_stages_load_strictly(tmp_path, capsys, image_folder, objective):
    import torch
    from safetensors.torch import load_file

    from medvlm.build import build_model
    from medvlm.tokenizer import build_tokenizer
    from pipelines.training.bundles import tower_module

    pretrain.main([str(_config(tmp_path, image_folder, "run", objective))])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stage = printed["stages"]["pretrain"]
    assert stage["steps_done"] == 4 and not printed["stopped"]
    assert np.isfinite(stage["first_loss"]) and np.isfinite(stage["last_loss"])
    out = tmp_path / "run" / pretrain.STAGE_DIR
    weights = load_file(str(out / "vision_tower.safetensors"))
    strict = _tiny_tower()  # `vision_init`: a strict state-dict load into the tower stage 0 / classify build
    strict.load_state_dict(weights, strict=True)
    model_cfg = ModelConfig.from_dict({
        **TINY["model"], "vision": {**TINY["model"]["vision"], "path": str(out / pretrain.TOWER_DIR)}, "max_views": 1,
        "decoder": {"kind": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
                    "intermediate_size": 64}})
    bundle = build_model(model_cfg, build_tokenizer(model_cfg, ["FINDINGS: clear. IMPRESSION: normal."] * 4))
    llava_tower = tower_module(bundle).state_dict()  # `model.vision.path`: stages 1/2 build on the folder
    assert set(weights) == set(llava_tower)
    for key, value in weights.items():
        assert torch.equal(llava_tower[key], value), key
    init = _tiny_tower().state_dict()  # training moved the tower away from its seeded init
    assert not torch.equal(init["layers.0.attention.q_proj.weight"],
                           weights["layers.0.attention.q_proj.weight"])


@pytest.mark.parametrize("objective", ["dino", "simclr"])
def test_resume_ends_where_an_unbroken_run_ends(tmp_path, image_folder, objective):
    """EMA teacher, center and heads are resume state: stop after 2 steps, resume, same tower bit for bit."""
    from safetensors.torch import load_file

    pretrain.main([str(_config(tmp_path, image_folder, "whole", objective))])
    broken = _config(tmp_path, image_folder, "broken", objective)
    first = pretrain.run(pretrain.load_pretrain_config(broken, ["stop_after=2"]))
    assert first["stopped"] and first["stages"]["pretrain"]["steps_done"] == 2
    assert not (tmp_path / "broken" / pretrain.STAGE_DIR / "vision_tower.safetensors").exists()
    second = pretrain.run(pretrain.load_pretrain_config(broken))
    assert second["stages"]["pretrain"]["steps_done"] == 4
    whole, resumed = _tower_weights(tmp_path / "whole"), _tower_weights(tmp_path / "broken")
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert np.array_equal(whole[key].numpy(), resumed[key].numpy()), key
    states = [load_file(str(next((tmp_path / run / pretrain.STAGE_DIR / "state").glob("step_*")) / "model.safetensors"))
              for run in ("whole", "broken")]
    if objective == "dino":
        assert {"center", "teacher_updates"} <= set(states[0]) and any(k.startswith("teacher.") for k in states[0])
    for key in states[0]:
        assert np.array_equal(states[0][key].numpy(), states[1][key].numpy()), key


@pytest.mark.parametrize("objective", ["dino", "simclr"])
def test_loss_is_finite_and_decreases_on_a_fixed_batch(objective):
    """The student learns its target. DINO's target moves by design (EMA teacher, running center: its loss can
    rise while the teacher sharpens), so here the teacher is held (momentum 1) and the center is the batch's."""
    import torch

    torch.manual_seed(0)
    ssl = SslConfig(**SSL, teacher_momentum=1.0, center_momentum=0.0)
    model = build_joint_embedding(objective, _tiny_tower(), ssl, steps=20)
    opt = torch.optim.AdamW(model.trainable(), lr=5e-4)  # 2e-3 sends the tiny SimCLR back to collapse
    x = torch.rand(8, 1, 32, 32)
    views = [v.expand(-1, 3, -1, -1) for v in random_views(x, 2, 32, ssl.global_scale, AugmentConfig(), seed=1)]
    local = [v.expand(-1, 3, -1, -1) for v in random_views(x, 2, 16, ssl.local_scale, AugmentConfig(), seed=2)]
    losses = []
    for step in range(20):
        model.catch_up(step)
        loss = model(views, local if objective == "dino" else [])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < losses[1] - 0.05, losses  # step 0 ran with the zero center
    if objective == "dino":
        assert int(model.teacher_updates) == 19


def test_views_are_crops_in_range_and_replayed_by_seed():
    import torch

    x = torch.rand(3, 1, 32, 32)
    a = random_views(x, 2, 16, (0.1, 0.4), AugmentConfig(), seed=5)
    b = random_views(x, 2, 16, (0.1, 0.4), AugmentConfig(), seed=5)
    c = random_views(x, 2, 16, (0.1, 0.4), AugmentConfig(), seed=6)
    assert [tuple(v.shape) for v in a] == [(3, 1, 16, 16)] * 2
    assert all(float(v.min()) >= 0.0 and float(v.max()) <= 1.0 for v in a)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], a[1])


def test_config_names_the_flag_to_change(tmp_path):
    data = _images(tmp_path / "images")
    cfg = _config(tmp_path, data, "bad")
    with pytest.raises(ConfigError, match="pretrain.objective"):
        pretrain.load_pretrain_config(cfg, ["pretrain.objective=byol"])
    with pytest.raises(ConfigError, match="local_size"):
        pretrain.load_pretrain_config(cfg, ["pretrain.ssl.local_size=12"])
    with pytest.raises(ConfigError, match="global_scale"):
        pretrain.load_pretrain_config(cfg, ["pretrain.ssl.global_scale=[0.5, 1.5]"])
    with pytest.raises(ConfigError, match="export"):
        pretrain.load_pretrain_config(cfg, ["pretrain.ssl.export=both"])
    assert pretrain.load_pretrain_config(cfg).pretrain.objective == "dino"


def test_kermany_dino_recipe_pretrains_the_kermany_tower():
    configs = Path(__file__).parents[3] / "pipelines/configs"
    mae = pretrain.load_pretrain_config(configs / "pretrain_kermany.yaml")
    dino = pretrain.load_pretrain_config(configs / "pretrain_kermany_dino.yaml")
    assert dino.pretrain.objective == "dino" and mae.pretrain.objective == "mae"
    assert dino.model == mae.model and dino.out_dir != mae.out_dir


@pytest.mark.slow  # two processes importing torch/transformers: ~20-40 s
def test_two_rank_ddp_dino_runs_and_saves_the_teacher(tmp_path):
    """DDP: the student through the wrapper, the center averaged over ranks, the teacher caught up on each rank."""
    summary = run_two_ranks(_config(tmp_path, _images(tmp_path / "images"), "ddp"), tmp_path / "ddp")
    assert summary["world_size"] == 2 and summary["stages"]["pretrain"]["steps_done"] == 4
    assert np.isfinite(summary["stages"]["pretrain"]["last_loss"]) and len(_tower_weights(tmp_path / "ddp")) > 0
