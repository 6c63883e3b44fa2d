"""Store write latency: enqueue, claim and complete, each one committed transaction.

Prints ONE JSON object: per backend (SQLite file in WAL with synchronous=FULL; PostgreSQL when the
Debian server binaries exist) the median and p95 latency in ms of each operation, and its ratio
to the baseline: one committed plain INSERT into an in-memory SQLite table (sqlite3 module).

Usage: python benchmarks/bench_store.py [--n 200]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from pipelines.store import open_store  # noqa: E402
from pipelines.store.jobs import DraftPayload, claim, complete, enqueue  # noqa: E402


def _stats(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {"median_ms": round(statistics.median(ms), 4), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 4)}


def baseline(n: int) -> dict[str, float]:
    """Committed single-row INSERTs into an in-memory SQLite table."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        conn.execute("INSERT INTO t (a, b) VALUES (?, ?)", (f"a{i}", "b"))
        conn.commit()
        samples.append(time.perf_counter() - t0)
    conn.close()
    return _stats(samples)


def bench_store(url: str, n: int) -> dict[str, dict[str, float]]:
    """Median/p95 of enqueue, claim and complete over ``n`` jobs on ``url``."""
    payload = DraftPayload(
        findings="Lungs clear.", impression="No acute disease.", sentences=[{"text": "x", "confidence": 0.9}]
    )
    times: dict[str, list[float]] = {"enqueue": [], "claim": [], "complete": []}
    with open_store(url, audit_key=b"bench") as store:
        for i in range(n):
            t0 = time.perf_counter()
            enqueue(store, f"1.2.3.{i}", "m1", "p")
            times["enqueue"].append(time.perf_counter() - t0)
        for _ in range(n):
            t0 = time.perf_counter()
            job = claim(store, "bench", 300)
            t1 = time.perf_counter()
            complete(store, job.id, "bench", payload)
            t2 = time.perf_counter()
            times["claim"].append(t1 - t0)
            times["complete"].append(t2 - t1)
    return {op: _stats(s) for op, s in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="jobs per backend")
    args = parser.parse_args()
    base = baseline(args.n * 5)
    result: dict = {"baseline": {"name": "sqlite3 in-memory single-row INSERT + commit", **base}, "n": args.n}
    backends: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        backends["sqlite_wal_full"] = f"sqlite:///{tmp}/bench.db"
        from _postgres import start_cluster_or_skip_reason

        cluster, reason = start_cluster_or_skip_reason()
        if cluster is not None:
            backends["postgresql"] = cluster.create_database()
        else:
            result["postgresql_skipped"] = reason
        try:
            for name, url in backends.items():
                ops = bench_store(url, args.n)
                for figures in ops.values():
                    figures["ratio_to_baseline"] = round(figures["median_ms"] / base["median_ms"], 1)
                result[name] = ops
        finally:
            if cluster is not None:
                cluster.stop()
    if "postgresql" in result:
        result["postgresql_note"] = "throwaway cluster with fsync=off (test settings), loopback TCP"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
