"""`medvlm demo`: phantoms -> train -> evaluate -> register -> batch drafts -> dashboard, all local.

Everything lands under one folder (`var/` by default): the phantom data, the MLflow store
(`var/mlflow.db`, artifacts in `var/mlartifacts`), the training run, the review store
(`var/medvlm.db`). A second run finds the registered `champion` and skips training; studies already
drafted are skipped by the batch job (idempotent enqueue). NOT FOR CLINICAL USE: the model is trained on
synthetic phantoms and knows nothing about real patients.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO_RECIPE = REPO_CONFIGS / "train_demo.yaml"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo builds; the defaults fit in a few minutes on 2 CPU cores."""

    var_dir: Path = Path("var")
    """Root folder of everything the demo writes."""
    n_train: int = 800
    """Phantom studies for training and evaluation (train/val/test split inside)."""
    n_incoming: int = 12
    """New phantom studies arriving for the batch job to draft (a different seed: never seen in training)."""
    image_size: int = 128
    """Phantom image side in pixels; the model resizes to its own input size."""
    seed: int = 0
    """Seed of the training phantoms; the incoming studies use `seed + 1000`."""
    retrain: bool = False
    """Train even when a champion is already registered."""
    workers: int = 1
    """Batch drafting worker processes."""

    def __post_init__(self) -> None:
        if self.n_train < 40:
            raise ValueError(f"demo n_train={self.n_train}: need at least 40 studies for train/val/test splits")


def _demo_signing_key(var: Path) -> str:
    """The demo's sign-off key: random once, kept in ``var/signing.key`` (0600) so later runs verify earlier sign-offs.

    A site sets ``MEDVLM_SIGNING_KEY`` from its secret store instead; the demo's key never leaves ``var/``
    and never enters the database.
    """
    import secrets

    path = var / "signing.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip()


def _phantoms(out: Path, n: int, seed: int, size: int, *, truth: Path | None = None) -> None:
    """Write phantom studies once (deterministic for a seed); `truth` moves reports.jsonl out of the folder.

    The incoming folder plays a modality's export folder: DICOM only. Its ground-truth reports go beside it,
    otherwise the batch job would (rightly) quarantine reports.jsonl as an unreadable file.
    """
    from pipelines.phantoms import PhantomConfig, generate_phantoms

    done = truth if truth is not None else out / "reports.jsonl"
    if done.exists():
        return
    generate_phantoms(out, n=n, seed=seed, progress=True, config=PhantomConfig(size=size))
    if truth is not None:
        (out / "reports.jsonl").replace(truth)


def run_demo(cfg: DemoConfig, console: Console) -> dict[str, Any]:
    """Run the demo pipeline up to fresh drafts in the review store (the dashboard is started by the caller).

    Returns:
        A summary: training result (or that the champion was reused), evaluation vs. baselines, drafting counts,
        and the store URL / model URI the dashboard needs.
    """
    from pipelines.drafting.job import draft_command
    from pipelines.recipes.train import train_command
    from pipelines.tracking.registry import champion_exists
    from pipelines.tracking.tracker import resolve_tracking_uri

    var = cfg.var_dir.resolve()
    var.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MEDVLM_VAR_DIR", str(var))  # MLflow store + model cache under var/
    os.environ.setdefault("MEDVLM_SIGNING_KEY", _demo_signing_key(var))
    tracking_uri = resolve_tracking_uri(None, var)
    db_url = os.environ.get("MEDVLM_DATABASE_URL") or f"sqlite:///{var / 'medvlm.db'}"
    model_uri = "models:/medvlm@champion"
    summary: dict[str, Any] = {"db": db_url, "model": model_uri, "tracking_uri": tracking_uri}
    timings: dict[str, float] = {}

    t = time.perf_counter()
    console.rule("1/4 phantom studies")
    train_dir, incoming_dir = var / "demo" / "phantoms", var / "demo" / "incoming"
    _phantoms(train_dir, cfg.n_train, cfg.seed, cfg.image_size)
    _phantoms(incoming_dir, cfg.n_incoming, cfg.seed + 1000, cfg.image_size,
              truth=var / "demo" / "incoming_truth.jsonl")
    timings["phantoms_s"] = time.perf_counter() - t

    t = time.perf_counter()
    console.rule("2/4 training (the recipe's stages: findings head, projector, LoRA), tracked in MLflow")
    if champion_exists(tracking_uri=tracking_uri) and not cfg.retrain:
        console.print("a registered champion exists: skipping training (pass --retrain to train again)")
        summary["train"] = {"skipped": "champion registered"}
    else:
        overrides = [
            f"data.dir={train_dir}",
            f"data.cache_dir={var / 'cache' / 'images'}",
            f"out_dir={var / 'runs' / 'demo'}",
            f"tracking_uri={tracking_uri}",
            f"seed={cfg.seed}",
        ]
        summary["train"] = train_command(DEMO_RECIPE, overrides)
        if not champion_exists(tracking_uri=tracking_uri):  # the release gate kept it out (baselines not beaten)
            model_uri = summary["model"] = summary["train"]["checkpoint"]
            console.print("the release gate made no champion: drafting with the demo run's checkpoint instead")
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    console.rule("3/4 batch drafting of new studies into the review store")
    drafted = draft_command(model_uri, str(incoming_dir), db=db_url, workers=cfg.workers, progress=True)
    summary["draft"] = drafted.as_dict() if hasattr(drafted, "as_dict") else drafted
    timings["draft_s"] = time.perf_counter() - t
    summary["timings"] = {k: round(v, 1) for k, v in timings.items()}
    return summary
