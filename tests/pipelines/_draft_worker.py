"""Helpers for the drafting-job tests: a tiny real checkpoint, phantom studies, and a worker process.

As a script it is a real drafting worker (the crash test SIGKILLs it):

    python tests/pipelines/_draft_worker.py URL CHECKPOINT WORKER_ID LEASE_S THROTTLE_S

It loads the checkpoint once and drafts every queued job of that model with the production worker
loop (`pipelines.drafting.worker.worker_loop` with a `ModelDrafter`; one job per batch, sleeping
THROTTLE_S after each claim so crash points are reproducible), then exits.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

AUDIT_KEY = b"test-key"
CORPUS = [
    "FINDINGS: The heart is normal in size. The lungs are clear.\nIMPRESSION: No acute cardiopulmonary disease.",
    "FINDINGS: The heart is enlarged. Small left pleural effusion.\nIMPRESSION: Cardiomegaly with small left effusion.",
    "FINDINGS: Right upper lobe consolidation. No pneumothorax.\nIMPRESSION: Right upper lobe pneumonia.",
    "Is there a pleural effusion?", "Yes.", "No.",
]


def build_tiny_checkpoint(out: Path, *, max_new_tokens: int = 12, image_size: int = 32,
                          decoder: dict | None = None, vision: dict | None = None, max_views: int = 2) -> Path:
    """Build, save and return a tiny random-weight checkpoint folder (seconds on CPU)."""
    from medvlm.build import build_model
    from medvlm.checkpoint import save_checkpoint
    from medvlm.config import ModelConfig
    from medvlm.tokenizer import train_report_tokenizer

    cfg = ModelConfig.from_dict({
        "image_size": image_size, "max_views": max_views, "lora": {"r": 0},
        "vision": {"kind": "vit", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                   "patch_size": 8, **(vision or {})},
        "decoder": {"kind": "llama", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                    "intermediate_size": 128, "max_position_embeddings": 512, **(decoder or {})},
        "generation": {"max_new_tokens": max_new_tokens, "batch_size": 4},
    })
    tok = train_report_tokenizer(CORPUS * 4, vocab_size=400)
    save_checkpoint(build_model(cfg, tok), out)
    return out


def make_phantoms(out: Path, n: int, seed: int = 0, size: int = 128) -> Path:
    """Write `n` phantom studies (frontal + lateral each) into `out`."""
    from pipelines.phantoms import PhantomConfig, generate_phantoms

    generate_phantoms(out, n=n, seed=seed, progress=False, config=PhantomConfig(size=size))
    return out


def main(url: str, checkpoint: str, worker_id: str, lease_s: float, throttle_s: float) -> None:
    from pipelines.drafting.identity import DraftOptions, model_identity
    from pipelines.drafting.worker import ModelDrafter, load_bundle, worker_loop
    from pipelines.store import open_store

    options = DraftOptions(lease_seconds=lease_s, batch_size=1, throttle_s=throttle_s, poll_seconds=0.1)
    ident = model_identity(checkpoint, options)
    bundle = load_bundle(ident, threads=1)
    with open_store(url, audit_key=AUDIT_KEY) as store:
        worker_loop(store, ModelDrafter(store, bundle, ident, options), ident, worker_id, options)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
