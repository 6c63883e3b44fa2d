"""Bodies of `medvlm train` and `medvlm evaluate`, called by `pipelines.cli` (parse -> build -> run -> close)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def train_command(config_path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """`medvlm train CONFIG [k=v ...]`: load the recipe YAML with overrides and run it.

    Args:
        config_path: a `pipelines/configs/train_*.yaml` file.
        overrides: `key=value` items with dotted keys (`lora.optim.lr=1e-3 model.decoder.hidden_size=64`).

    Returns:
        The run summary (stages with wall time and losses, checkpoint, evaluation, registry decision).

    Raises:
        medvlm.errors.ConfigError: a bad key, value or combination (the message names the flag).
        pipelines.datasets.DatasetError: the data folder is unusable.
    """
    from pipelines.recipes.common import load_train_config
    from pipelines.train import run_training

    cfg = load_train_config(config_path, overrides)
    return run_training(cfg)


def evaluate_command(model: str, data: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """`medvlm evaluate --model M --data DIR [--out DIR]`: model vs. baselines on the held-out split.

    Args:
        model: a checkpoint folder or an MLflow URI (`models:/medvlm@champion`).
        data: data folder (DICOM + reports.jsonl); its val and test splits are evaluated.
        out: where `eval.json` and `eval.md` go; default `<data>/eval`.

    Returns:
        `{"model": summary, "most_common": summary, "nearest_neighbour": summary, "n_studies": N,
        "split": ..., "optional": {...}, "eval_json": path, "eval_md": path}`.
    """
    from pipelines.evaluate import evaluate_checkpoint

    out = Path(out) if out is not None else Path(data) / "eval"
    evaluation = evaluate_checkpoint(model, data, out)
    d = evaluation.to_dict()
    return {
        "model": d["summary"],
        **d["baselines"],
        "n_studies": evaluation.n_studies,
        "split": evaluation.split,
        "optional": d["optional"],
        "eval_json": str(out / "eval.json"),
        "eval_md": str(out / "eval.md"),
    }
