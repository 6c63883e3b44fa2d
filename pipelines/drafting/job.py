"""`medvlm draft`: the batch drafting job (source → gate → queue → workers → drafts for review).

Stages, each in its own module:

1. **Identity** (`pipelines.drafting.identity`): the checkpoint's content hash and the prompt hash
   key every job, so a re-run skips studies already drafted and resumes interrupted ones.
2. **Intake** (`pipelines.drafting.intake`, this process): each study is read, gated and queued,
   or quarantined with a reason.
3. **Drafting** (`pipelines.drafting.worker`): workers claim jobs with a lease, draft them in
   batches outside any transaction and complete them; how the workers run (in this process, in
   local processes, on Ray) is chosen once by `pipelines.drafting.engines.build_engine`.

This module wires them together: parse → build → run → close. No patient data is printed:
studies are shown by their audit pseudonym.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.drafting.engines import build_engine, check_engine
from pipelines.drafting.identity import DraftError, DraftOptions, model_identity
from pipelines.drafting.intake import IntakeStats, intake_study
from pipelines.drafting.worker import ensure_versions
from pipelines.store import open_store
from pipelines.store.studies import outcome_counts

DEFAULT_WORK_DIR = Path("var") / "incoming"


@dataclass(frozen=True)
class DraftSummary:
    """The outcome of one `medvlm draft` run."""

    model_version: str
    """Content hash of the checkpoint."""
    prompt_hash: str
    """Hash of the prompt and decoding settings."""
    engine: str
    """``local`` or ``ray``."""
    workers: int
    """Worker processes (or Ray actors); 0 = drafted in the calling process."""
    studies_seen: int
    """Studies taken from the source."""
    drafted: int
    """Studies of this run that now have a draft."""
    skipped: int
    """Studies already drafted (or finished) by an earlier run: not queued again."""
    skipped_by_state: dict[str, int]
    """Skipped studies by their job's state (``done``, ``quarantined``, ``failed``)."""
    quarantined: dict[str, int]
    """Quarantined studies by reason code (at intake and by workers)."""
    failed: dict[str, int]
    """Studies whose job failed for good, by error code."""
    pending: int
    """Jobs of this run still queued or leased (workers died); the next run resumes them."""
    files_rejected: dict[str, int]
    """Files set aside inside drafted studies, by reason code."""
    seconds: float
    """Wall time of the run."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        out = dataclasses.asdict(self)
        out["studies_per_min"] = round(60.0 * self.drafted / self.seconds, 2) if self.seconds > 0 else None
        return out


def run_draft_job(model: str | Path, source: Any, *, db: str | None = None, workers: int = 1,
                  engine: str = "local", options: DraftOptions | None = None, limit: int | None = None,
                  progress: bool = True, audit_key: bytes | None = None, ray_address: str | None = None,
                  source_label: str | None = None) -> DraftSummary:
    """Run the whole drafting job (stages in the module docstring).

    Args:
        model: checkpoint folder or ``models:/NAME@ALIAS``.
        source: a ``dicom_io`` source (anything with ``studies()``) or a `ParsedSource`.
        db: store URL (default ``$MEDVLM_DATABASE_URL`` or the SQLite file ``var/medvlm.db``). An
            in-memory SQLite URL works only with ``workers=0``.
        workers: local engine: worker processes (``spawn``; 0 = draft in this process after intake);
            Ray engine: actors.
        engine: ``local`` or ``ray``.
        options: run options.
        limit: take at most this many studies from the source.
        progress: Rich progress bar and one status line per study on stderr.
        audit_key: pseudonym key (default: the store's).
        ray_address: Ray cluster address (None = a local 2-CPU cluster).
        source_label: recorded as the studies' source (default: the parsed source's label).

    Returns:
        The run summary.

    Raises:
        DraftError: bad engine, workers, limit or options.
        pipelines.tracking.registry.RegistryError, medvlm.errors.CheckpointError: bad model.
        dicom_io.sources.PacsError: the PACS could not be queried.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipelines.tracking.registry import resolve_model_uri

    check_engine(engine, workers)
    if limit is not None and limit < 1:
        raise DraftError(f"--limit must be >= 1, got {limit}")
    options = options or DraftOptions()
    started = time.perf_counter()
    ident = model_identity(resolve_model_uri(model), options)
    label = source_label or getattr(source, "label", None) or type(source).__name__
    studies_source = getattr(source, "source", source)
    console = Console(stderr=True)
    stats = IntakeStats()
    with open_store(db, audit_key=audit_key) as store:
        runner = build_engine(engine, workers, store, ident, options, ray_address=ray_address)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, disable=not progress, transient=False) as bar:
            task = bar.add_task("draft", total=None)

            def line(pseudo: str, outcome: str, detail: str = "") -> None:
                if progress:
                    bar.console.print(f"study {pseudo}: {outcome}" + (f" ({detail})" if detail else ""),
                                      highlight=False, markup=False)

            def on_job(pseudo: str, outcome: str, detail: str) -> None:
                if outcome in ("done", "quarantined", "failed"):
                    bar.advance(task)
                line(pseudo, outcome, detail)

            def intake(tick: Callable[[], None]) -> None:
                files_by_key: dict[str, set[Path]] = {}
                for fetched in studies_source.studies():
                    key = fetched.study_key
                    repeat = key in files_by_key  # a watched folder yields a study again with its later files
                    if not repeat:
                        if limit is not None and stats.seen >= limit:
                            break
                        stats.seen += 1
                    files_by_key.setdefault(key, set()).update(Path(f) for f in fetched.files)
                    outcome = intake_study(store, key, sorted(files_by_key[key]), ident, options, source=label,
                                           stats=IntakeStats() if repeat else stats,
                                           skipped=getattr(fetched, "skipped", ()))
                    line(store.pseudonym(key)[:12], outcome.replace(":", " ", 1))
                    bar.update(task, total=stats.queued + stats.resumed)
                    tick()

            notes = runner.run(intake, on_job)
        for note in notes:
            console.print(note, markup=False)
        ensure_versions(store, ident)
        out = outcome_counts(store, stats.study_uids, model_version=ident.model_version,
                             prompt_hash=ident.prompt_hash)
        out.quarantined.update(stats.quarantined)
        return DraftSummary(
            model_version=ident.model_version, prompt_hash=ident.prompt_hash, engine=runner.name, workers=workers,
            studies_seen=stats.seen, drafted=out.done, skipped=stats.skipped.get("done", 0),
            skipped_by_state=dict(stats.skipped), quarantined=dict(out.quarantined), failed=dict(out.failed),
            pending=out.pending, files_rejected=dict(stats.files_rejected),
            seconds=round(time.perf_counter() - started, 3))


def draft_command(
    model: str,
    source: str,
    db: str | None = None,
    workers: int = 1,
    engine: str = "local",
    lease_seconds: float = 300.0,
    limit: int | None = None,
    progress: bool = True,
    *,
    batch_size: int = 4,
    max_new_tokens: int | None = None,
    work_dir: str | Path = DEFAULT_WORK_DIR,
    calling_aet: str = "MEDVLM",
    our_port: int = 0,
    watch: bool = False,
    ray_address: str | None = None,
    trust_remote_code: bool = False,
    dtype: str | None = None,
) -> DraftSummary:
    """`medvlm draft --model M --source SRC [--db URL] [--workers N] [--engine local|ray]`.

    Args:
        model: medvlm checkpoint, Hugging Face folder of an allowed family, or ``models:/medvlm@champion``.
        source: a folder, ``dicomweb:URL`` or ``dimse://CALLED_AET@HOST:PORT`` (see
            `pipelines.intake.sources`).
        db: store URL; default ``$MEDVLM_DATABASE_URL`` or ``sqlite:///var/medvlm.db``.
        workers: local engine: worker processes (0 = in this process); ray: actors.
        engine: ``local`` or ``ray``.
        lease_seconds: job lease (renewed while drafting).
        limit: take at most this many studies from the source.
        progress: progress bar and per-study lines on stderr.
        batch_size: jobs drafted per `generate` call.
        max_new_tokens: override of the checkpoint's token budget.
        work_dir: where PACS sources store retrieved files (keep it: the export reads headers there).
        calling_aet: our AE title (DIMSE).
        our_port: our C-STORE SCP port for C-MOVE.
        watch: poll a folder source for new files.
        ray_address: Ray cluster address (engine ray); None = a local cluster.
        trust_remote_code: allow a Hugging Face folder's own code (hashes pinned, audited per worker).
        dtype: weights dtype in the workers ("float32" | "bfloat16"; None: the checkpoint's own).

    Returns:
        `pipelines.drafting.job.DraftSummary` (``as_dict()`` for printing).
    """
    from pipelines.intake.sources import parse_source

    options = DraftOptions(lease_seconds=lease_seconds, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           trust_remote_code=trust_remote_code, dtype=dtype)
    parsed = parse_source(source, work_dir=work_dir, calling_aet=calling_aet, our_port=our_port, watch=watch)
    return run_draft_job(model, parsed, db=db, workers=workers, engine=engine, options=options, limit=limit,
                         progress=progress, ray_address=ray_address)
