"""The same recipe under `torchrun --standalone --nproc_per_node=2` (gloo on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]



@pytest.mark.slow  # two processes each importing torch/transformers and training a tiny model: ~30-60 s
def test_two_rank_ddp_run(tmp_path):
    from pipelines.phantoms import PhantomConfig, generate_phantoms

    data = tmp_path / "phantoms"
    generate_phantoms(data, n=8, seed=1, progress=False, config=PhantomConfig(size=64))
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "pipelines.recipes.train", str(REPO_ROOT / "pipelines" / "configs" / "train_tiny.yaml"),
        f"data.dir={data}", f"out_dir={out}", "evaluate.enabled=false", "num_threads=1",
        "contrastive.steps=2", "projector.steps=2", "lora.steps=2",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    ddp = summary["ddp"]
    assert ddp["world_size"] == 2
    shard0, shard1 = ddp["step0_shards"]
    assert shard0 and shard1 and not set(shard0) & set(shard1)  # each rank its own studies
    assert ddp["param_checksums"][0] == pytest.approx(ddp["param_checksums"][1], abs=1e-9)  # ranks in sync
    assert (out / "checkpoint" / "model.safetensors").is_file()
    assert all(summary["stages"][s]["finished"] for s in ("contrastive", "projector", "lora"))
