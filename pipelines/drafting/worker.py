"""The drafting worker: the one loop that claims jobs, drafts them and records each outcome.

A worker claims up to ``batch_size`` jobs of its model version with a lease, hands them to a
`Drafter` **outside any transaction** while a thread renews the leases (`LeaseKeeper`), then
completes each job (draft + consistency flags + per-sentence confidences) and creates version 1 of
the report for review. A crash leaves leases that expire; another worker (or the next run) takes
the jobs again, and ``complete`` refuses a stale worker, so a study is drafted once.

The drafting step is injected: `ModelDrafter` drafts with the MedVLM bundle (production); tests of
the queue pass a fake drafter to the same loop. Local processes, the calling process and Ray actors
all run this loop's pieces (`pipelines.drafting.engines`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pipelines.drafting.identity import DraftError, DraftOptions, ModelIdentity, author, generation_settings
from pipelines.drafting.intake import QuarantineError, load_study_input
from pipelines.store import Store
from pipelines.store.jobs import (
    DraftPayload,
    Job,
    LeaseLostError,
    claim,
    complete,
    done_jobs_without_version,
    fail,
    pending_count,
    quarantine,
)
from pipelines.store.leases import LeaseKeeper
from pipelines.store.owners import owner_id, release_dead_leases
from pipelines.store.studies import get_study_metadata

if TYPE_CHECKING:
    from medvlm.build import MedVLM
    from medvlm.generate import Draft, StudyInput

ProgressFn = Callable[[str, str, str], None]
"""Called with (study pseudonym, outcome, detail) after each job of a worker."""


@dataclass(frozen=True)
class Drafted:
    """One job's draft, with a PHI-free note for the progress line (e.g. ``"42 tokens"``)."""

    payload: DraftPayload
    note: str = ""


class Drafter(Protocol):
    """The drafting step of the worker loop: a batch of claimed jobs in, one result per job out."""

    def draft(self, jobs: Sequence[Job]) -> list[Drafted | Exception]:
        """Draft `jobs` (called outside any transaction, leases renewed meanwhile).

        Returns:
            One entry per job, in order: its `Drafted`, or the error that stops it: a
            `QuarantineError` sets the study aside, any other error fails the job (retried while
            attempts remain). Raising fails every job of the batch.
        """
        ...


def draft_payload(draft: Draft, ident: ModelIdentity, *, low_confidence: float,
                  has_prior: bool = False) -> DraftPayload:
    """Turn a `medvlm.generate.Draft` into the store's payload with confidences and flags."""
    from medvlm.consistency import check_consistency

    sentences = [{"text": s.text, "section": s.section, "confidence": round(float(s.confidence), 4),
                  "min_prob": round(float(s.min_prob), 4), "n_tokens": int(s.n_tokens)} for s in draft.sentences]
    flags: dict[str, Any] = {}
    probabilities = getattr(draft, "findings_probabilities", None)
    if probabilities:  # the findings head's reading, shown beside the draft (not a flag: parse_flags skips it)
        from pipelines.store.drafts import PROBABILITIES_KEY

        flags[PROBABILITIES_KEY] = dict(probabilities)
    consistency = check_consistency(draft.findings, draft.impression, has_prior=has_prior, probabilities=probabilities)
    if consistency:
        flags["consistency"] = [{"code": f.code, "message": f.message, "sentence_indices": list(f.sentence_indices),
                                 "observation": f.observation} for f in consistency]
    low = [i for i, s in enumerate(sentences) if s["confidence"] < low_confidence]
    if low:
        flags["low_confidence"] = low
    if not (draft.findings.strip() or draft.impression.strip()):
        flags["empty_report"] = True
    return DraftPayload(findings=draft.findings, impression=draft.impression, sentences=sentences, flags=flags,
                        model_hash=ident.model_version, adapter_hash=ident.adapter_hash)


def load_bundle(ident: ModelIdentity, threads: int | None = None) -> MedVLM:
    """Load the model folder for inference (LoRA merged); `threads` caps torch's intra-op threads.

    A medvlm checkpoint or a Hugging Face folder (`medvlm.loading.load_model`); remote code must
    match the hashes the job pinned in `ident` (a file changed since the job started is refused).
    """
    import torch

    from medvlm.loading import load_model, load_vlm

    if threads:
        torch.set_num_threads(int(threads))
    if ident.remote_code:
        return load_vlm(ident.checkpoint, trust_remote_code=ident.trust_remote_code, remote_code=ident.remote_code,
                        dtype=ident.dtype)
    return load_model(ident.checkpoint, trust_remote_code=ident.trust_remote_code, merge=True, dtype=ident.dtype)


class ModelDrafter:
    """The production `Drafter`: loads each study's recorded inputs, drafts the batch in one call.

    Args:
        store: the open store (the studies' metadata names their input files).
        bundle: the loaded model.
        ident: its identity (image size, views, hashes recorded with each draft).
        options: run options (window, batch size, token budget, low-confidence threshold).
    """

    def __init__(self, store: Store, bundle: MedVLM, ident: ModelIdentity, options: DraftOptions) -> None:
        self.store, self.bundle, self.ident, self.options = store, bundle, ident, options
        self.settings = generation_settings(bundle.config, options)
        remote_code = bundle.source.get("remote_code")
        if remote_code:  # trusted third-party code runs in this process: say so in the audit log
            import os

            from pipelines.store.model_loads import record_remote_code_load

            record_remote_code_load(store, f"draft-worker-{os.getpid()}", model_version=ident.model_version,
                                    family=bundle.family.name, remote_code=remote_code)

    def draft(self, jobs: Sequence[Job]) -> list[Drafted | Exception]:
        """Draft `jobs` in one batched `generate` call (see `Drafter.draft`)."""
        from medvlm.generate import generate_drafts

        results: dict[int, Drafted | Exception] = {}
        ready: list[tuple[int, StudyInput]] = []
        for i, job in enumerate(jobs):
            try:
                metadata = get_study_metadata(self.store, job.study_uid)
                ready.append((i, load_study_input(metadata, self.ident.image_size, window=self.options.window,
                                                  max_views=self.ident.max_views)))
            except Exception as exc:  # noqa: BLE001 - one bad study must not stop the batch
                results[i] = exc
        if ready:
            try:
                drafts = generate_drafts(self.bundle, [inp for _, inp in ready], self.settings)
            except Exception as exc:  # noqa: BLE001 - the error is recorded on every study of the call
                drafts = [exc] * len(ready)
            for (i, _), draft in zip(ready, drafts, strict=True):
                if isinstance(draft, Exception):
                    results[i] = draft
                    continue
                payload = draft_payload(draft, self.ident, low_confidence=self.options.low_confidence)
                shown = sorted(k for k in payload.flags if k != "findings_probabilities")  # not a flag
                flags = f", flags {shown}" if shown else ""
                results[i] = Drafted(payload, f"{draft.n_tokens} tokens{flags}")
        return [results[i] for i in range(len(jobs))]


def pending_for(store: Store, ident: ModelIdentity) -> int:
    """Jobs of this model version and prompt still queued or leased."""
    return pending_count(store, model_version=ident.model_version, prompt_hash=ident.prompt_hash)


def claim_batch(store: Store, ident: ModelIdentity, worker_id: str, options: DraftOptions,
                size: int | None = None) -> list[Job]:
    """Claim up to `size` (default ``batch_size``) jobs of this model version and prompt only."""
    jobs: list[Job] = []
    for _ in range(options.batch_size if size is None else size):
        job = claim(store, worker_id, options.lease_seconds, model_version=ident.model_version,
                    prompt_hash=ident.prompt_hash)
        if job is None:
            break
        jobs.append(job)
    return jobs


def draft_jobs(store: Store, drafter: Drafter, ident: ModelIdentity, jobs: list[Job], worker_id: str,
               options: DraftOptions, on_job: ProgressFn | None = None) -> list[str]:
    """Draft a batch of claimed jobs and record each outcome.

    Args:
        store: the open store.
        drafter: the drafting step.
        ident: the model identity (author of the review versions).
        jobs: jobs claimed by `worker_id`.
        worker_id: the lease owner.
        options: run options (lease length, throttle).
        on_job: progress callback.

    Returns:
        One outcome per job: ``done``, ``quarantined``, ``failed``, ``requeued`` or ``lost``.
    """
    from pipelines.store.versions import create_version_from_draft

    outcomes: dict[int, str] = {}

    def record(job: Job, outcome: str, detail: str = "") -> None:
        outcomes[job.id] = outcome
        if on_job is not None:
            on_job(store.pseudonym(job.study_uid)[:12], outcome, detail)

    try:
        with LeaseKeeper(store, [j.id for j in jobs], worker_id, options.lease_seconds):
            if options.throttle_s > 0:
                time.sleep(options.throttle_s)
            results: list[Drafted | Exception] = list(drafter.draft(jobs))
        if len(results) != len(jobs):
            raise DraftError(f"the drafter returned {len(results)} results for {len(jobs)} jobs")
    except Exception as exc:  # noqa: BLE001 - record the error on every job of the batch
        results = [exc] * len(jobs)
    for job, result in zip(jobs, results, strict=True):
        try:
            if isinstance(result, QuarantineError):
                quarantine(store, job.id, worker_id, result.code, result.message)
                record(job, "quarantined", result.code)
            elif isinstance(result, Exception):
                # the message may quote header values (PHI): store only the error type
                name = type(result).__name__
                state = fail(store, job.id, worker_id, name, f"drafting error ({name})")
                record(job, "failed" if state == "failed" else "requeued", name)
            else:
                complete(store, job.id, worker_id, result.payload)
                create_version_from_draft(store, job.id, author=author(ident))
                record(job, "done", result.note)
        except LeaseLostError:
            record(job, "lost")
    return [outcomes[j.id] for j in jobs]


def ensure_versions(store: Store, ident: ModelIdentity) -> int:
    """Create the review version of every done job of this model that has none (a worker may have
    died between ``complete`` and ``create_version_from_draft``). Idempotent; returns how many."""
    from pipelines.store.versions import create_version_from_draft

    missing = done_jobs_without_version(store, model_version=ident.model_version, prompt_hash=ident.prompt_hash)
    for job_id in missing:
        create_version_from_draft(store, job_id, author=author(ident))
    return len(missing)


def worker_loop(store: Store, drafter: Drafter, ident: ModelIdentity, worker_id: str, options: DraftOptions, *,
                intake_done: Any = None, on_job: ProgressFn | None = None,
                max_batches: int | None = None) -> Counter:
    """Claim and draft batches until no job of this model is pending and intake is done.

    Args:
        store: the open store.
        drafter: the drafting step (`ModelDrafter` in production).
        ident: model identity (only its jobs are claimed).
        worker_id: unique worker name; the lease owner is `pipelines.store.owners.owner_id` of it
            (``NAME@HOST#PID``).
        options: run options.
        intake_done: an event (threading or multiprocessing) set when intake has queued everything;
            None = already done.
        on_job: progress callback.
        max_batches: stop after this many batches.

    Returns:
        Outcome counts.
    """
    counts: Counter = Counter()
    batches = 0
    worker_id = owner_id(worker_id)  # leases name this host and process, so a crash is seen at once
    release_dead_leases(store, actor=worker_id)  # a killed run's jobs: drafted now, not after their lease
    while max_batches is None or batches < max_batches:
        jobs = claim_batch(store, ident, worker_id, options)
        if not jobs:
            if (intake_done is None or intake_done.is_set()) and pending_for(store, ident) == 0:
                break
            time.sleep(options.poll_seconds)
            release_dead_leases(store, actor=worker_id)  # a sibling worker that died meanwhile
            continue
        batches += 1
        counts.update(draft_jobs(store, drafter, ident, jobs, worker_id, options, on_job))
    ensure_versions(store, ident)
    return counts
