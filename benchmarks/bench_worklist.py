"""Benchmark: the dashboard worklist with 10,000 drafts in the store.

Prints ONE JSON object. Measured: ``dashboard.logic.load_worklist`` (the SQL query joining each
study's latest report version and latest draft, flag parsing, the pandas DataFrame build and sort;
default order, and the worst case, sorted by lowest sentence confidence, which decodes every draft)
and, separately, one whole Streamlit run of the worklist page through ``AppTest`` (query + table
+ widgets, no browser). Baseline: a bare ``SELECT count(*) FROM studies`` on the same database,
the least any worklist must pay per run. Target: the page renders in under a second.

The store is a temporary SQLite file (WAL), filled in bulk with SQLAlchemy core inserts: studies
with a finished job and a draft of ~8 sentences with confidences and flags on every fifth study;
a third of them have a first report version, a tenth a signed one.

    .venv/bin/python benchmarks/bench_worklist.py [--rows 10000] [--repeats 5] [--no-apptest]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import func, insert, select

from dashboard import logic
from pipelines.store import open_store
from pipelines.store.models import DraftRecord, JobRecord, ReportVersion, StudyRecord

SENTENCES = ["The heart size is normal.", "The mediastinal contours are unremarkable.",
             "Small left pleural effusion.", "No pneumothorax.", "Mild interstitial edema.",
             "No focal consolidation.", "The osseous structures are intact.", "Small effusion."]


def fill(store, rows: int, seed: int = 0) -> None:  # noqa: ANN001 - pipelines.store.Store
    """Insert ``rows`` studies, each with a done job and a draft, in one transaction."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    studies, jobs, drafts, versions = [], [], [], []
    for i in range(rows):
        uid = f"2.25.{10**12 + i}"
        studies.append({"id": i + 1, "study_uid": uid, "source": "/bench", "status": "drafted",
                        "priority": int(rng.integers(0, 4)), "received_at": now - timedelta(minutes=i),
                        "metadata": {"study_id": f"B{i:05d}"}})
        jobs.append({"id": i + 1, "study_uid": uid, "model_version": "medvlm/1", "prompt_hash": "0" * 64,
                     "state": "done", "priority": 0, "attempts": 1, "max_attempts": 3,
                     "created_at": now, "updated_at": now})
        sents = [{"text": s, "section": "findings" if k < 6 else "impression",
                  "confidence": float(rng.uniform(0.2, 1.0))} for k, s in enumerate(SENTENCES)]
        flags = ({"consistency": [{"code": "contradiction", "message": "x", "sentence_indices": [2, 7]}]}
                 if i % 5 == 0 else {"consistency": []})
        drafts.append({"id": i + 1, "job_id": i + 1, "findings": " ".join(SENTENCES[:6]),
                       "impression": " ".join(SENTENCES[6:]), "sentences": sents, "flags": flags,
                       "model_version": "medvlm/1", "created_at": now})
        if i % 3 == 0:
            versions.append({"study_uid": uid, "version": 1, "findings": "f", "impression": "i", "author": "m",
                             "created_at": now, "content_hash": "0" * 64,
                             "status": "signed" if i % 10 == 0 else "draft"})
    with store.transaction() as s:
        s.execute(insert(StudyRecord.__table__), studies)
        s.execute(insert(JobRecord.__table__), jobs)
        s.execute(insert(DraftRecord.__table__), drafts)
        s.execute(insert(ReportVersion.__table__), versions)


def _median_s(fn, repeats: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def apptest_run_s(url: str, repeats: int) -> float:
    """Median seconds of one full worklist page run through AppTest (after one warm-up run)."""
    from streamlit.testing.v1 import AppTest

    from dashboard.auth import User

    os.environ["MEDVLM_DATABASE_URL"] = url
    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120)
    at.session_state[logic.SESSION_KEY] = logic.DashboardSession(user=User("bench", "Bench", "radiologist"))
    at.run()
    if at.exception:
        raise RuntimeError(f"worklist page failed: {at.exception}")
    return _median_s(at.run, repeats)


def main() -> None:
    """Parse arguments, fill a temporary store, time the worklist, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-apptest", action="store_true", help="skip the whole-page AppTest timing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        with open_store(url) as store:
            t0 = time.perf_counter()
            fill(store, args.rows)
            fill_s = time.perf_counter() - t0

            def baseline() -> None:
                with store.transaction() as s:
                    s.execute(select(func.count()).select_from(StudyRecord)).scalar_one()

            table_rows = {}

            def worklist() -> None:
                table, total = logic.load_worklist(store, logic.WorklistFilters(review=()))
                table_rows["shown"], table_rows["total"] = len(table), total

            def worklist_by_confidence() -> None:  # worst case: every draft's JSON is decoded
                logic.load_worklist(store, logic.WorklistFilters(review=(), sort_by="min_confidence",
                                                                 descending=False))

            baseline()
            worklist()  # warm the page cache and imports
            base_s = _median_s(baseline, args.repeats)
            work_s = _median_s(worklist, args.repeats)
            worst_s = _median_s(worklist_by_confidence, args.repeats)
        page_s = None if args.no_apptest else apptest_run_s(url, args.repeats)
    out = {
        "benchmark": "worklist",
        "rows_in_store": args.rows,
        "rows_matching": table_rows["total"],
        "rows_shown": table_rows["shown"],
        "fill_s": round(fill_s, 3),
        "baseline": "SELECT count(*) FROM studies",
        "baseline_ms": round(base_s * 1e3, 3),
        "worklist_query_and_dataframe_ms": round(work_s * 1e3, 1),
        "ratio_to_baseline": round(work_s / base_s, 1),
        "worklist_sorted_by_confidence_ms": round(worst_s * 1e3, 1),
        "sorted_by_confidence_ratio_to_baseline": round(worst_s / base_s, 1),
        "apptest_full_page_run_ms": None if page_s is None else round(page_s * 1e3, 1),
        "target_ms": 1000,
        "under_target": max(worst_s, page_s or 0.0) < 1.0,
        "repeats": args.repeats,
        "statistic": "median",
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
