"""Single-stage recipes: `python -m pipelines.recipes.<stage> CONFIG k=v` runs that stage alone."""

from __future__ import annotations

import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
TINY = REPO_ROOT / "pipelines" / "configs" / "train_tiny.yaml"


def test_stages_run_alone_chain_through_out_dir_and_skip_when_done(tmp_path, capsys):
    from pipelines.phantoms import PhantomConfig, generate_phantoms
    from pipelines.recipes import lora, projector

    data = tmp_path / "phantoms"
    generate_phantoms(data, n=4, seed=1, progress=False, config=PhantomConfig(size=64))
    out = tmp_path / "run"
    argv = [str(TINY), f"data.dir={data}", f"out_dir={out}", "projector.steps=1", "lora.steps=2",
            "data.augment.enabled=false"]
    projector.main(argv)
    assert (out / "stage1_projector" / "checkpoint" / "model.safetensors").is_file()
    capsys.readouterr()
    lora.main(argv)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(printed["stages"]) == ["lora"] and not printed["stopped"]
    assert printed["stages"]["lora"]["steps_done"] == 2
    stage_dir = out / "stage2_lora"
    assert (stage_dir / "done.json").is_file() and (stage_dir / "checkpoint" / "model.safetensors").is_file()
    assert json.loads((out / "lora_summary.json").read_text())["stages"]["lora"]["finished"]
    assert not (stage_dir / "tokenizer").exists()  # continued from stage 1's checkpoint, no fresh model
    lora.main(argv)  # same command again: the stage is done, nothing retrains
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["stages"]["lora"]["skipped"] == "done"
