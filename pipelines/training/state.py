"""Resume state without pickle, so that "resume ends where an unbroken run ends".

`state/step_XXXXXXX/` holds `model.safetensors` (all weights), `optimizer.safetensors` (AdamW moments
as tensors) and `state.json` (step, param-group hyper-parameters, scheduler state, the torch RNG state
as a list of bytes); `state/latest` names the newest one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

STATE_DIR = "state"


def _optimizer_tensors(opt: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups}


def save_state(stage_dir: Path, step: int, model: nn.Module, opt: Any, sched: Any, extra: dict | None = None) -> Path:
    """Write the resume state of `step` and point `state/latest` at it (earlier states removed).

    Returns:
        The state folder.
    """
    import torch
    from safetensors.torch import save_file, save_model

    root = stage_dir / STATE_DIR
    target = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))  # handles tied (shared) weights
    tensors, opt_meta = _optimizer_tensors(opt)
    save_file(tensors, str(tmp / "optimizer.safetensors")) if tensors else None
    sched_state = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
    meta = {
        "step": step,
        "optimizer": opt_meta,
        "scheduler": sched_state,
        "torch_rng": torch.get_rng_state().tolist(),
        "extra": extra or {},
    }
    (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    (root / "latest").write_text(target.name, encoding="utf-8")
    for old in root.glob("step_*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def latest_state(stage_dir: Path) -> Path | None:
    """The newest resume-state folder of a stage, or None."""
    pointer = stage_dir / STATE_DIR / "latest"
    if not pointer.is_file():
        return None
    path = stage_dir / STATE_DIR / pointer.read_text(encoding="utf-8").strip()
    return path if (path / "state.json").is_file() else None


def load_state(path: Path, model: nn.Module, opt: Any, sched: Any) -> dict[str, Any]:
    """Restore model, optimiser, schedule and torch RNG from `save_state` output; returns state.json."""
    import torch
    from safetensors.torch import load_file, load_model

    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    load_model(model, str(path / "model.safetensors"), strict=True)
    tensors = load_file(str(path / "optimizer.safetensors")) if (path / "optimizer.safetensors").is_file() else {}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    groups = meta["optimizer"]["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
    sched.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(opt.param_groups)})
    torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
    return meta


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
