"""Benchmark: every supported family's tiny random checkpoint on CPU: load time, studies/s at batch 16 vs 1.

Prints ONE JSON object. Per family: the tiny model + processor of `tests/medvlm/families/_tiny_vlms.py`
is saved with `save_pretrained` into a temporary folder and loaded as a user's folder would be
(`medvlm.loading.load_model`: checks, weights, processor, context check); then the same studies
(frontal + lateral, random pixels) are drafted one per `generate` call (the baseline) and 16 per
call (left padding, KV cache), each study generating exactly `--new-tokens` tokens, so both paths
do the same work. Times are the fastest of `--repeats` interleaved runs (the cores are shared).
Tiny configs (1 decoder layer, width 32) measure the per-family overhead of the pipeline
(processor, chat template, image tokens), not the speed of a real checkpoint.

    .venv/bin/python benchmarks/bench_families.py [--studies 16] [--batch 16] [--new-tokens 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medvlm.config import GenerationSettings
from medvlm.generate import StudyInput, generate_drafts
from medvlm.loading import load_model

TINY_VLMS = Path(__file__).resolve().parents[1] / "tests" / "medvlm" / "families" / "_tiny_vlms.py"


def _tiny_vlms():
    spec = importlib.util.spec_from_file_location("_tiny_vlms", TINY_VLMS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["_tiny_vlms"] = module
    spec.loader.exec_module(module)
    return module


def _draft_seconds(bundle, studies, batch: int, new_tokens: int) -> float:
    settings = GenerationSettings(max_new_tokens=new_tokens, batch_size=batch)
    start = time.perf_counter()
    drafts = generate_drafts(bundle, studies, settings, min_new_tokens=new_tokens)
    elapsed = time.perf_counter() - start
    assert all(d.n_tokens == new_tokens for d in drafts), "every study must generate the same number of tokens"
    return elapsed


def bench_family(family: str, folder: Path, studies: list[StudyInput], args: argparse.Namespace) -> dict:
    """Load time and drafting rates of one family's saved folder."""
    loads = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        bundle = load_model(folder)
        loads.append(time.perf_counter() - start)
    _draft_seconds(bundle, studies[:2], args.batch, args.new_tokens)  # warm-up
    singles, batches = [], []
    for _ in range(args.repeats):
        singles.append(_draft_seconds(bundle, studies, 1, args.new_tokens))
        batches.append(_draft_seconds(bundle, studies, args.batch, args.new_tokens))
    t1, tb = min(singles), min(batches)
    return {
        "load_s": round(min(loads), 3),
        "params": sum(p.numel() for p in bundle.model.parameters()),
        "images_per_prompt": min(bundle.family.max_images, 2),
        "batch1_studies_per_s": round(len(studies) / t1, 2),
        f"batch{args.batch}_studies_per_s": round(len(studies) / tb, 2),
        f"ratio_batch{args.batch}_to_batch1": round(t1 / tb, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per path; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--families", default="", help="comma-separated subset (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = _tiny_vlms()
    names = [f for f in args.families.split(",") if f] or sorted(tiny.BUILDERS)
    rng = np.random.default_rng(0)
    studies = [StudyInput([rng.random((64, 64), dtype=np.float32) for _ in range(2)]) for _ in range(args.studies)]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-families-") as tmp:
        for family in names:
            folder = tiny.save_tiny(family, Path(tmp) / family)
            results[family] = bench_family(family, folder, studies, args)
    print(json.dumps({
        "benchmark": "bench_families",
        "baseline": "batch 1: one study per generate call (same model, studies and token count)",
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "studies": args.studies,
        "batch_size": args.batch,
        "new_tokens_per_study": args.new_tokens,
        "note": "tiny random configs (1 decoder layer, width 32): pipeline overhead per family, not real-model speed",
        "families": results,
    }))


if __name__ == "__main__":
    main()
