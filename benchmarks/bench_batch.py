"""Benchmark: the batch drafting job end to end (folder source → drafts in the store), 1 vs 2 workers.

Prints ONE JSON object. Named baseline: 1 worker process with 1 torch thread (one core); candidate:
2 worker processes with 1 torch thread each (the worker scaling the target is about). Also reported:
1 worker with torch's default threads (both cores), which is what `--workers 1` does on this machine:
torch's intra-op threads already use the second core there, so a second process adds little over it. Same checkpoint, same
phantom studies, a fresh SQLite store per run; the wall time includes process start, model
loading, intake (read, gate, normalise) and drafting. Target: ratio >= 1.6 on 2 cores. Also
reports the store's write latency (enqueue, claim, complete) on an empty SQLite file.

The model is random-weight but large enough that drafting dominates (decoder 768 x 8 layers,
64 px images, 2 views, 64 new tokens), so the figures measure compute, not start-up.

    .venv/bin/python benchmarks/bench_batch.py [--studies 64] [--new-tokens 48] [--batch 4]

Measured on a quiet 2-core machine (64 studies, 48 tokens): 2 workers 1.61x the 1-worker/1-thread baseline,
1.45x one worker using both cores through torch threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "pipelines"))

from _draft_worker import build_tiny_checkpoint, make_phantoms  # noqa: E402

from pipelines.drafting.identity import DraftOptions  # noqa: E402
from pipelines.drafting.job import run_draft_job  # noqa: E402
from pipelines.intake.sources import parse_source  # noqa: E402


def _store_latency(root: Path, n: int = 40) -> dict[str, float]:
    """Median and p95 milliseconds of enqueue, claim and complete on a fresh SQLite store."""
    from pipelines.store import open_store
    from pipelines.store.jobs import DraftPayload, claim, complete, enqueue

    times: dict[str, list[float]] = {"enqueue": [], "claim": [], "complete": []}
    with open_store(f"sqlite:///{root / 'latency.db'}", audit_key=b"bench") as store:
        for i in range(n):
            t = time.perf_counter()
            enqueue(store, f"1.2.3.{i}", "m" * 64, "p" * 64, source="bench")
            times["enqueue"].append(time.perf_counter() - t)
        payload = DraftPayload("The lungs are clear.", "No acute disease.",
                               [{"text": "The lungs are clear.", "confidence": 0.9}], {"low_confidence": [0]})
        for _ in range(n):
            t = time.perf_counter()
            job = claim(store, "bench", 60.0)
            times["claim"].append(time.perf_counter() - t)
            t = time.perf_counter()
            complete(store, job.id, "bench", payload)
            times["complete"].append(time.perf_counter() - t)
    out = {}
    for key, values in times.items():
        values.sort()
        out[f"{key}_ms_median"] = round(1000 * statistics.median(values), 2)
        out[f"{key}_ms_p95"] = round(1000 * values[int(0.95 * (len(values) - 1))], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=64)  # start-up (spawn, imports) amortised as in a real batch
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        root = Path(tmp)
        ckpt = build_tiny_checkpoint(
            root / "ckpt", max_new_tokens=args.new_tokens, image_size=64,
            decoder={"hidden_size": args.hidden, "num_layers": args.layers, "num_heads": 12 if args.hidden % 12 == 0
                     else 8, "num_kv_heads": 4, "intermediate_size": 4 * args.hidden},
            vision={"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128})
        phantoms = make_phantoms(root / "ph", n=args.studies, seed=11, size=256)
        runs = {}
        for name, workers, threads in (("1w_1t", 1, 1), ("2w_1t", 2, 1), ("1w_default_threads", 1, None)):
            opts = DraftOptions(batch_size=args.batch, lease_seconds=300, threads_per_worker=threads)
            summary = run_draft_job(ckpt, parse_source(str(phantoms)), db=f"sqlite:///{root / f'{name}.db'}",
                                    workers=workers, options=opts, progress=False, audit_key=b"bench")
            if summary.drafted != args.studies:
                raise SystemExit(f"{name}: drafted {summary.drafted} of {args.studies} studies")
            runs[name] = summary
        per_min = {w: round(60.0 * s.drafted / s.seconds, 2) for w, s in runs.items()}
        result = {
            "benchmark": "batch_draft_end_to_end",
            "baseline": "1 worker process, 1 torch thread",
            "studies": args.studies,
            "max_new_tokens": args.new_tokens,
            "batch_size": args.batch,
            "decoder": {"hidden": args.hidden, "layers": args.layers},
            "seconds": {w: s.seconds for w, s in runs.items()},
            "studies_per_min": per_min,
            "ratio_2_vs_1": round(per_min["2w_1t"] / per_min["1w_1t"], 3),
            "ratio_2_vs_1_default_threads": round(per_min["2w_1t"] / per_min["1w_default_threads"], 3),
            "target_ratio": 1.6,
            "store_write_latency": _store_latency(root),
            "cpu_count": os.cpu_count(),
            "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
