"""Stage "pretrain": MAE on unlabelled images; exact resume; its encoder becomes the next stage's tower."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from medvlm.errors import ConfigError
from pipelines.recipes import pretrain

TINY = {
    "run_name": "tiny_pretrain",
    "tracking": "none",
    "num_threads": 1,
    "model": {"image_size": 32, "vision": {"kind": "vit", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                           "intermediate_size": 64, "patch_size": 8}},
    "pretrain": {"steps": 4, "batch_size": 4, "checkpoint_every": 0, "decoder_hidden_size": 16,
                 "decoder_num_layers": 1, "decoder_num_heads": 2, "decoder_intermediate_size": 32,
                 "optim": {"lr": 1e-3, "warmup_steps": 0}},
}


def _images(folder: Path, n: int = 6) -> Path:
    """`n` generated 64x64 grey PNGs (two lungs on a gradient), one byte-identical copy, one icon-sized image."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    (folder / "sub").mkdir(parents=True)
    for i in range(n):
        lungs = ((xx - 0.3) ** 2 / 0.03 + (yy - 0.5) ** 2 / 0.12 < 1) | ((xx - 0.7) ** 2 / 0.03 + (yy - 0.5) ** 2 / 0.12 < 1)
        img = 0.6 + 0.2 * yy - 0.4 * lungs + 0.05 * rng.standard_normal((64, 64))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / ("sub" if i % 2 else ".") / f"im{i}.png")
    (folder / "copy.png").write_bytes((folder / "im0.png").read_bytes())
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "icon.png")  # the gate rejects it
    return folder


def _config(tmp_path: Path, data: Path, name: str, **extra) -> Path:
    cfg = {**TINY, "out_dir": str(tmp_path / name), "data": {"dir": str(data)}, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _tower_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / pretrain.STAGE_DIR / "vision_tower.safetensors"))


def test_tiny_mae_run_saves_a_tower_and_skips_when_done(tmp_path, capsys):
    data = _images(tmp_path / "images")
    cfg = _config(tmp_path, data, "run")
    pretrain.main([str(cfg)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["stages"]["pretrain"]["steps_done"] == 4 and not printed["stopped"]
    summary = json.loads((tmp_path / "run" / "pretrain_summary.json").read_text())
    assert summary["images"] == {**summary["images"], "found": 8, "unique": 7, "rejected": 1, "used": 6}
    losses = summary["stages"]["pretrain"]
    assert np.isfinite(losses["first_loss"]) and np.isfinite(losses["last_loss"])
    assert (tmp_path / "run" / pretrain.STAGE_DIR / pretrain.TOWER_DIR / "config.json").is_file()
    again = pretrain.run(pretrain.load_pretrain_config(cfg))  # done.json: nothing retrained
    assert again["stages"]["pretrain"]["skipped"] == "done"


def test_resume_ends_where_an_unbroken_run_ends(tmp_path):
    data = _images(tmp_path / "images")
    pretrain.main([str(_config(tmp_path, data, "whole"))])
    broken = _config(tmp_path, data, "broken")
    first = pretrain.run(pretrain.load_pretrain_config(broken, ["stop_after=2"]))
    assert first["stopped"] and first["stages"]["pretrain"]["steps_done"] == 2
    assert not (tmp_path / "broken" / pretrain.STAGE_DIR / "vision_tower.safetensors").exists()
    second = pretrain.run(pretrain.load_pretrain_config(broken))
    assert second["stages"]["pretrain"]["steps_done"] == 4 and len(second["stages"]["pretrain"]) > 0
    whole, resumed = _tower_weights(tmp_path / "whole"), _tower_weights(tmp_path / "broken")
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert np.array_equal(whole[key].numpy(), resumed[key].numpy()), key


def test_encoder_weights_reach_the_next_stages_tower(tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import ViTMAEForPreTraining

    from medvlm.build import build_model
    from medvlm.config import ModelConfig
    from medvlm.tokenizer import build_tokenizer
    from pipelines.recipes.contrastive import build_tower
    from pipelines.training.bundles import tower_module

    data = _images(tmp_path / "images")
    cfg = pretrain.load_pretrain_config(_config(tmp_path, data, "run"))
    pretrain.run(cfg)
    stage = tmp_path / "run" / pretrain.STAGE_DIR
    # The MAE's own encoder at the end of training (resume state = the trained MAE) is what the towers carry.
    mae = ViTMAEForPreTraining(pretrain.mae_config(cfg))
    state = load_file(str(next((stage / "state").glob("step_*")) / "model.safetensors"))
    mae.load_state_dict(state, strict=False)
    encoder = {k: v for k, v in mae.vit.state_dict().items()}
    model_dict = {**TINY["model"], "vision": {**TINY["model"]["vision"], "path": str(stage / pretrain.TOWER_DIR)},
                  "max_views": 1, "decoder": {"kind": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                              "num_kv_heads": 1, "intermediate_size": 64}}
    model_cfg = ModelConfig.from_dict(model_dict)
    bundle = build_model(model_cfg, build_tokenizer(model_cfg, ["FINDINGS: clear. IMPRESSION: normal."] * 4))
    llava_tower = tower_module(bundle).state_dict()  # model.vision.path: stages 1/2 build on it
    stage0_tower = build_tower(model_cfg)[0].state_dict()      # stage 0 / classify start from it
    for key, value in encoder.items():
        assert torch.equal(llava_tower[key], value), key
        assert torch.equal(stage0_tower[key], value), key
    strict = build_tower(ModelConfig.from_dict(TINY["model"]))[0]  # `vision_init`: strict state-dict load
    strict.load_state_dict(load_file(str(stage / "vision_tower.safetensors")), strict=True)
    assert torch.equal(strict.embeddings.patch_embeddings.projection.weight,
                       encoder["embeddings.patch_embeddings.projection.weight"])


def test_config_refuses_a_tower_mae_cannot_pretrain(tmp_path):
    data = _images(tmp_path / "images")
    with pytest.raises(ConfigError, match="vision.kind=vit"):
        pretrain.load_pretrain_config(_config(tmp_path, data, "bad"), ["model.vision.kind=siglip"])
    with pytest.raises(ConfigError, match="mask_ratio"):
        pretrain.load_pretrain_config(_config(tmp_path, data, "bad"), ["pretrain.mask_ratio=1.0"])


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[3] / "pipelines/configs").glob("pretrain_*.yaml")),
                         ids=lambda p: p.name)
def test_every_pretrain_yaml_loads_and_names_its_command(path):
    assert path.read_text(encoding="utf-8").splitlines()[0] == f"# python -m pipelines.recipes.pretrain {path.parent.parent.name}/configs/{path.name}"
    cfg = pretrain.load_pretrain_config(path, ["pretrain.steps=3", "tracking=none"])
    assert cfg.model.vision.kind == "vit" and cfg.pretrain.steps == 3 and cfg.tracking == "none"


def test_a_sample_of_the_shared_radiographs_pretrains(tmp_path, shared_data):
    kermany = shared_data / "kermany"
    if not kermany.is_dir():
        pytest.skip(f"{kermany} absent: the Kermany radiographs are not in the shared data")
    sample = tmp_path / "sample"
    sample.mkdir()
    for p in sorted((kermany / "NORMAL").glob("*.jpeg"))[:4] + sorted((kermany / "PNEUMONIA").glob("*.jpeg"))[:4]:
        (sample / p.name).write_bytes(p.read_bytes())
    summary = pretrain.run(pretrain.load_pretrain_config(_config(tmp_path, sample, "real")))
    assert summary["images"]["used"] == 8 and summary["images"]["rejected"] == 0
    assert summary["stages"]["pretrain"]["steps_done"] == 4


def test_kermany_recipe_reads_the_pretrained_tower():
    from pipelines.training.config import load_train_config

    configs = Path(__file__).parents[3] / "pipelines/configs"
    pre = pretrain.load_pretrain_config(configs / "pretrain_kermany.yaml")
    train = load_train_config(configs / "train_kermany.yaml")
    assert train.model.image_size == pre.model.image_size
    assert {**vars(train.model.vision), "path": None} == {**vars(pre.model.vision), "path": None}
    assert train.model.vision.path == f"{pre.out_dir}/{pretrain.STAGE_DIR}/{pretrain.TOWER_DIR}"


@pytest.mark.slow
def test_the_report_recipe_trains_on_a_labelled_folder_from_the_pretrained_tower(tmp_path):
    """Pretrain -> index a labelled folder by child -> classify/projector/lora -> eval.json with the finding."""
    from pipelines.recipes.train import run_training
    from pipelines.training.config import load_train_config
    from pipelines.training.image_folder import write_index

    data = tmp_path / "labelled"
    for k, png in enumerate(sorted(_images(tmp_path / "images", n=8).rglob("im*.png"))):
        label, name = ("NORMAL", f"IM-000{k}-0001") if k % 2 else ("PNEUMONIA", f"person{k}_virus_{k}")
        (data / label).mkdir(parents=True, exist_ok=True)
        (data / label / f"{name}.png").write_bytes(png.read_bytes())
    pre_cfg = pretrain.load_pretrain_config(_config(tmp_path, data, "pre"))
    pretrain.run(pre_cfg)
    tower = tmp_path / "pre" / pretrain.STAGE_DIR / pretrain.TOWER_DIR
    index = write_index(data, tmp_path / "index", val_fraction=0.4)
    tiny = Path(__file__).parents[3] / "pipelines/configs/train_tiny.yaml"
    cfg = load_train_config(tiny, [
        f"data.dir={index}", f"out_dir={tmp_path / 'run'}", "stages=[classify,projector,lora]", "data.max_views=1",
        "model.max_views=1", "model.vision.patch_size=8", "model.vision.num_layers=1", f"model.vision.path={tower}",
        "classify.steps=2", "classify.batch_size=4", "classify.checkpoint_every=0", "evaluate.max_studies=null",
        "model.generation.max_new_tokens=8",
    ])
    summary = run_training(cfg)
    assert summary["stages"]["classify"]["steps_done"] == 2 and not summary["stopped"]
    finding = json.loads((tmp_path / "run" / "eval.json").read_text())["finding"]
    assert finding["probability_source"] == "findings_head" and finding["n"] >= 2


def run_two_ranks(cfg: Path, out: Path) -> dict:
    """`torchrun --standalone --nproc_per_node=2 -m pipelines.recipes.pretrain CFG`; returns the run's summary."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "pipelines.recipes.pretrain", str(cfg)]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "pretrain_summary.json").read_text())


@pytest.mark.slow  # two processes importing torch/transformers: ~20-40 s
def test_two_rank_ddp_pretraining_runs_and_saves_the_tower(tmp_path):
    summary = run_two_ranks(_config(tmp_path, _images(tmp_path / "images"), "ddp"), tmp_path / "ddp")
    assert summary["world_size"] == 2 and summary["stages"]["pretrain"]["steps_done"] == 4
    assert len(_tower_weights(tmp_path / "ddp")) > 0
