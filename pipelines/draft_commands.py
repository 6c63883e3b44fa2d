"""Bodies of `medvlm draft`, `medvlm export` and `medvlm ask`, called by `pipelines.cli`.

Each parses its strings, builds the objects, runs, closes (STYLE rule 3); the CLI only maps
options onto these arguments and prints the returned summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_WORK_DIR = Path("var") / "incoming"


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
) -> Any:
    """`medvlm draft --model M --source SRC [--db URL] [--workers N] [--engine local|ray]`.

    Args:
        model: checkpoint folder or ``models:/medvlm@champion``.
        source: a folder, ``dicomweb:URL`` or ``dimse://CALLED_AET@HOST:PORT`` (see
            `pipelines.sources_cli`).
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

    Returns:
        `pipelines.draft.DraftSummary` (``as_dict()`` for printing).
    """
    from pipelines.draft import DraftOptions, run_draft_job
    from pipelines.sources_cli import parse_source

    options = DraftOptions(lease_seconds=lease_seconds, batch_size=batch_size, max_new_tokens=max_new_tokens)
    parsed = parse_source(source, work_dir=work_dir, calling_aet=calling_aet, our_port=our_port, watch=watch)
    return run_draft_job(model, parsed, db=db, workers=workers, engine=engine, options=options, limit=limit,
                         progress=progress, ray_address=ray_address)


def export_command(
    db: str | None,
    study: str | None,
    sink: str | None,
    fhir_out: Path | None = None,
    include_unsigned: bool = False,
    *,
    resend: bool = False,
    sr_out: Path | None = None,
    calling_aet: str = "MEDVLM",
    actor: str = "cli",
) -> Any:
    """`medvlm export [--study UID|all] --sink stow:URL|cstore://AET@HOST:PORT [--fhir-out DIR]`.

    Args:
        db: store URL (default as `draft_command`).
        study: one Study Instance UID, or None / ``all`` for every study with a signed version.
        sink: ``stow:URL``, ``cstore://AET@HOST:PORT`` or None (files only).
        fhir_out: folder for FHIR DiagnosticReport JSON.
        include_unsigned: also export unsigned drafts (UNVERIFIED SR, preliminary FHIR).
        resend: resend versions already exported (same SR UIDs).
        sr_out: folder for copies of the SR files.
        calling_aet: our AE title for C-STORE.
        actor: recorded in the audit log.

    Returns:
        `pipelines.export.ExportSummary`.
    """
    from pipelines.export import export_reports, parse_sink
    from pipelines.store import open_store

    parsed = parse_sink(sink)
    study_uid = None if study in (None, "", "all") else study
    with open_store(db) as store:
        return export_reports(store, sink=parsed, study_uid=study_uid, fhir_out=fhir_out, sr_out=sr_out,
                              include_unsigned=include_unsigned, resend=resend, actor=actor,
                              calling_aet=calling_aet)


def ask_command(model: str, study_dir: str | Path, question: str) -> str:
    """`medvlm ask --model M --study DIR "question"`: the answer with its confidence, one line.

    Raises:
        pipelines.ask.AskError: empty question or unusable study folder.
    """
    from pipelines.ask import ask_study, format_answer

    return format_answer(ask_study(model, study_dir, question))
