"""`--engine ray`: phantom studies drafted by a Ray Data actor pool on a local 2-CPU cluster."""

from __future__ import annotations

import pytest
from _draft_worker import AUDIT_KEY, build_tiny_checkpoint, make_phantoms


@pytest.mark.slow
def test_ray_engine_drafts_every_study_once(tmp_path):
    pytest.importorskip("ray")
    from sqlalchemy import select

    from pipelines.drafting.identity import DraftOptions
    from pipelines.drafting.job import run_draft_job
    from pipelines.intake.sources import parse_source
    from pipelines.store import open_store
    from pipelines.store.models import DraftRecord, JobRecord, ReportVersion
    from pipelines.store.owners import owner_process

    ckpt = build_tiny_checkpoint(tmp_path / "ckpt")
    phantoms = make_phantoms(tmp_path / "ph", n=4, seed=5)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    summary = run_draft_job(ckpt, parse_source(str(phantoms)), db=url, workers=2, engine="ray", progress=False,
                            audit_key=AUDIT_KEY, options=DraftOptions(batch_size=1))
    assert summary.engine == "ray" and summary.drafted == 4 and summary.pending == 0
    assert summary.quarantined == {"unreadable": 1}  # reports.jsonl
    with open_store(url, audit_key=AUDIT_KEY) as store, store.transaction() as session:
        jobs = session.scalars(select(JobRecord)).all()
        drafts = session.scalars(select(DraftRecord)).all()
        versions = session.scalars(select(ReportVersion)).all()
        owners = {j.lease_owner for j in jobs}
    assert {j.state for j in jobs} == {"done"} and len(drafts) == 4 and len({d.job_id for d in drafts}) == 4
    assert len(versions) == 4
    # NAME@HOST#PID, so a later run on this host releases the jobs of an actor that died
    assert all(owner.startswith("ray@") and owner_process(owner) is not None for owner in owners)

    import ray

    assert not ray.is_initialized()  # the engine shut down the cluster it started
