"""The `medvlm` command line: one Typer app; each command parses, builds, runs, closes.

Heavy libraries are imported inside the commands so that `medvlm --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pipelines.console import console, fail, fmt, gate, known_errors, print_summary

app = typer.Typer(
    name="medvlm",
    help="Draft chest radiograph reports from DICOM; radiologists stay in charge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks could carry PHI from DICOM headers
)


@app.callback()
def _quiet_libraries() -> None:
    """Keep third-party chatter (weight-loading bars, deprecation notices) off the user's terminal."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")  # worker processes spawned by jobs
    import sys

    if "transformers" in sys.modules:  # imported before the CLI ran (an embedding app, a test): the env var came late
        import logging

        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(getattr(logging, os.environ["TRANSFORMERS_VERBOSITY"].upper(), logging.ERROR))


DbOption = Annotated[
    str | None, typer.Option("--db", help="Store URL (default $MEDVLM_DATABASE_URL or sqlite:///var/medvlm.db).")
]
ModelOption = Annotated[str, typer.Option("--model", help="medvlm checkpoint, Hugging Face folder (save_pretrained) "
                                                           "of a supported family, or models:/medvlm@champion.")]
DtypeOption = Annotated[str | None, typer.Option("--dtype", help="Weights dtype: float32 | bfloat16 "
                                                 "(default: a medvlm checkpoint's own, float32 otherwise).")]
TrustOption = Annotated[bool, typer.Option("--trust-remote-code", help="Allow a Hugging Face folder's own *.py "
                                           "code (MAIRA-2, CheXagent); its hashes are pinned and audited.")]


@app.command()
def demo(
    var_dir: Annotated[Path, typer.Option("--var", help="Folder for everything the demo writes.")] = Path("var"),
    n_train: Annotated[int, typer.Option(help="Phantom studies for training/evaluation.")] = 800,
    n_incoming: Annotated[int, typer.Option(help="New phantom studies for the batch job.")] = 12,
    retrain: Annotated[bool, typer.Option(help="Train even if a champion is registered.")] = False,
    dashboard: Annotated[bool, typer.Option(help="Open the dashboard on the drafts at the end.")] = True,
    port: Annotated[int, typer.Option(help="Dashboard port.")] = 8501,
) -> None:
    """Phantoms -> train -> evaluate -> register -> batch drafts -> dashboard, all local. NOT FOR CLINICAL USE."""
    from pipelines.launch.demo import DemoConfig, run_demo

    try:
        summary = run_demo(DemoConfig(var_dir=var_dir, n_train=n_train, n_incoming=n_incoming, retrain=retrain),
                           console)
    except known_errors() as exc:
        fail(exc)
    train = summary.get("train") or {}
    evaluation = train.get("evaluation") or {}
    rows = {"timings (s)": summary["timings"]}
    if evaluation:
        rows["clinical macro-F1 (held-out)"] = {n: fmt(e.get("clinical_macro_f1")) for n, e in evaluation.items()}
        rows["release gate"] = gate(train.get("registry"))
    else:
        rows["training"] = train.get("skipped", "-")
    drafted = summary.get("draft") or {}
    rows["batch drafting"] = {k: drafted.get(k) for k in ("studies_seen", "drafted", "skipped", "quarantined", "failed")}
    print_summary("demo (synthetic phantoms; NOT FOR CLINICAL USE)", rows)
    if dashboard:
        import os

        from pipelines.launch.dashboard import DEMO_USERS_FILE, dashboard_command

        os.environ.setdefault("MEDVLM_USERS_FILE", str(DEMO_USERS_FILE))  # the demo names its public demo users
        console.print("log in as [bold]rad[/] / [bold]rad-demo[/] (radiologist) or res / res-demo (resident)")
        raise typer.Exit(code=dashboard_command(summary["db"], port, "127.0.0.1", model=summary["model"]))


@app.command()
def ingest(
    src: Annotated[Path, typer.Argument(help="Folder of DICOM (and PNG/JPEG) files, walked recursively.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: studies.jsonl and quarantine/.")],
    window: Annotated[str, typer.Option(help="Intensity window: auto | voi | window | minmax.")] = "auto",
) -> None:
    """Read, validate and normalise a folder into studies.jsonl; bad files go to quarantine/ with reasons."""
    from pipelines.intake.ingest import run_ingest

    try:
        summary = run_ingest(src, out, window=window, progress=True)
    except known_errors() as exc:
        fail(exc)
    print_summary("ingest", summary.as_dict())


@app.command()
def deid(
    src: Annotated[Path, typer.Argument(help="A DICOM file or a folder of them.")],
    out: Annotated[Path, typer.Argument(help="Output folder for de-identified files.")],
    recipe: Annotated[Path | None, typer.Option(help="Recipe file; default: the versioned one in compliance/.")] = None,
    key_file: Annotated[Path | None, typer.Option(help="Secret key for UID remapping (else $MEDVLM_DEID_KEY).")] = None,
) -> None:
    """De-identify DICOM files (PS3.15 Annex E basic profile, recipe-driven)."""
    from pipelines.intake.deid import run_deid

    try:
        summary = run_deid(src, out, recipe=recipe, key_file=key_file, progress=True)
    except known_errors() as exc:
        fail(exc)
    print_summary("deid", summary.as_dict())


@app.command()
def label(
    file: Annotated[str, typer.Argument(help="JSONL of reports (findings/impression), or - for stdin.")] = "-",
) -> None:
    """Label reports with CheXpert's 14 observations; one JSON object per input line on stdout."""
    import json

    from pipelines.evaluation.label import run_label

    stream = sys.stdin if file == "-" else open(file, encoding="utf-8")  # noqa: SIM115
    try:
        for record in run_label(stream):
            sys.stdout.write(json.dumps(record) + "\n")
    except known_errors() as exc:
        fail(exc)
    finally:
        if stream is not sys.stdin:
            stream.close()


@app.command()
def phantoms(
    out: Annotated[Path, typer.Option("--out", help="Output folder of DICOM studies + reports.jsonl.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of studies.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same studies.")] = 0,
    size: Annotated[int, typer.Option("--size", min=64, help="Image side in pixels.")] = 512,
) -> None:
    """Render synthetic chest-radiograph phantom studies with matching reports (not patient data)."""
    from pipelines.phantoms import PhantomConfig, generate_phantoms

    try:
        summary = generate_phantoms(out, n=n, seed=seed, progress=True, config=PhantomConfig(size=size))
    except known_errors() as exc:
        fail(exc)
    print_summary("phantoms", summary.as_dict())


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="A recipe YAML from pipelines/configs/.")],
    trust_remote_code: TrustOption = False,
) -> None:
    """Run a training recipe (stage 0 contrastive, 1 projector, 2 LoRA), tracked in MLflow. Extra args: key=value."""
    from medvlm.errors import ConfigError
    from pipelines.recipes.train import train_command

    try:
        summary = train_command(config, [*ctx.args, *(["model.trust_remote_code=true"] if trust_remote_code else [])])
    except (ConfigError, *known_errors()) as exc:
        fail(exc)
    stages = {
        name: (f"{st.get('steps_done')} steps, loss {fmt(st.get('first_loss'))} -> {fmt(st.get('last_loss'))}, "
               f"{st.get('wall_s', 0):.0f} s" + (" (already done)" if st.get("skipped") else ""))
        for name, st in (summary.get("stages") or {}).items()
    }
    evaluation = summary.get("evaluation") or {}
    registry = summary.get("registry") or {}
    print_summary("train", {
        "stages": stages,
        "checkpoint": summary.get("checkpoint"),
        "clinical macro-F1": {name: fmt(ev.get("clinical_macro_f1")) for name, ev in evaluation.items()},
        "release gate": gate(registry),
    })


@app.command()
def evaluate(
    model: ModelOption,
    data: Annotated[Path, typer.Option("--data", help="Folder with reports.jsonl, or a labelled image folder.")],
    out: Annotated[Path | None, typer.Option("--out", help="Where eval.json / eval.md go.")] = None,
    register: Annotated[bool, typer.Option(help="Register in MLflow; champion only if it beats both baselines.")] = False,
    max_new_tokens: Annotated[int | None, typer.Option(min=1, help="Token budget per report.")] = None,
    max_studies: Annotated[int | None, typer.Option(min=1, help="Evaluate at most this many studies.")] = None,
    trust_remote_code: TrustOption = False,
    dtype: DtypeOption = None,
) -> None:
    """Score a model against the most-common-report and nearest-neighbour baselines on held-out studies."""
    from medvlm.errors import ConfigError
    from pipelines.evaluation.evaluate import evaluate_command
    from pipelines.evaluation.table import evaluation_output

    try:
        result = evaluate_command(model, data, out, trust_remote_code=trust_remote_code, register=register,
                                  max_new_tokens=max_new_tokens, max_studies=max_studies, dtype=dtype)
    except (ConfigError, *known_errors()) as exc:
        fail(exc)
    for item in evaluation_output(result):
        console.print(item, highlight=False)


@app.command()
def dashboard(
    db: DbOption = None,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8501,
    host: Annotated[str, typer.Option(help="Bind address; keep loopback unless behind a TLS proxy.")] = "127.0.0.1",
    model: Annotated[str | None, typer.Option(help="Model for the Ask page, as --model of ask (else $MEDVLM_MODEL).")] = None,
    trust_remote_code: TrustOption = False,
) -> None:
    """Start the review dashboard (Streamlit) on 127.0.0.1 and print its URL; Ctrl-C stops it."""
    from pipelines.launch.dashboard import dashboard_command

    try:
        code = dashboard_command(db, port, host, model=model, trust_remote_code=trust_remote_code)
    except known_errors() as exc:
        fail(exc)
    raise typer.Exit(code=code)


@app.command()
def draft(
    model: ModelOption,
    source: Annotated[str, typer.Option("--source", help="FOLDER | folder+watch:FOLDER | dicomweb:URL | "
                                                       "dimse://AET@HOST:PORT?calling=AET&our_port=N")],
    db: DbOption = None,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes (0: draft in this process).")] = 1,
    engine: Annotated[str, typer.Option(help="local | ray")] = "local",
    limit: Annotated[int | None, typer.Option(help="Take at most this many studies.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Studies per generate call in a worker.")] = 4,
    max_new_tokens: Annotated[int | None, typer.Option(help="Token budget per report.")] = None,
    lease_seconds: Annotated[float, typer.Option(help="Job lease; an expired lease is reclaimed.")] = 300.0,
    work_dir: Annotated[Path, typer.Option(help="Where studies pulled from a PACS are written.")] = Path("var/incoming"),
    watch: Annotated[bool, typer.Option(help="Keep watching a folder source for new studies.")] = False,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (engine ray).")] = None,
    trust_remote_code: TrustOption = False,
    dtype: DtypeOption = None,
) -> None:
    """Draft reports for new studies into the review store: each study exactly once, resumable after a crash."""
    from pipelines.drafting.job import draft_command

    try:
        summary = draft_command(model, source, db, workers, engine, lease_seconds, limit, True,
                                batch_size=batch_size, max_new_tokens=max_new_tokens, work_dir=work_dir,
                                watch=watch, ray_address=ray_address, trust_remote_code=trust_remote_code,
                                dtype=dtype)
    except known_errors() as exc:
        fail(exc)
    print_summary("draft", summary.as_dict())


@app.command()
def export(
    db: DbOption = None,
    study: Annotated[str, typer.Option(help="A study UID, or all.")] = "all",
    sink: Annotated[str | None, typer.Option(help="stow:URL | cstore://AET@HOST:PORT")] = None,
    fhir_out: Annotated[Path | None, typer.Option(help="Folder for FHIR DiagnosticReport JSON.")] = None,
    sr_out: Annotated[Path | None, typer.Option(help="Also write the SR files here.")] = None,
    include_unsigned: Annotated[bool, typer.Option(help="Also send unsigned drafts (as UNVERIFIED).")] = False,
    resend: Annotated[bool, typer.Option(help="Send again what was already exported (same SR UIDs).")] = False,
    connect_timeout: Annotated[float, typer.Option(help="Seconds to open a connection to the PACS.")] = 10.0,
    send_timeout: Annotated[float, typer.Option(help="Seconds for one SR (send and the PACS's answer).")] = 30.0,
    deadline: Annotated[float, typer.Option(help="Seconds for the whole export; the rest fails.")] = 600.0,
) -> None:
    """Send signed reports back to the PACS as DICOM SR (and FHIR); exit 1 if any send failed."""
    from pipelines.export.reports import export_command

    try:
        summary = export_command(db, study, sink, fhir_out, include_unsigned, resend=resend, sr_out=sr_out,
                                 connect_timeout_s=connect_timeout, send_timeout_s=send_timeout,
                                 deadline_s=deadline)
    except known_errors() as exc:
        fail(exc)
    print_summary("export", summary.as_dict())
    if not summary.ok:
        console.print(f"[bold red]export incomplete[/]: {sum(summary.failed.values())} failed", highlight=False)
        raise typer.Exit(code=1)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question about the study.")],
    model: ModelOption,
    study: Annotated[Path, typer.Option("--study", help="Folder with the study's DICOM files.")],
    trust_remote_code: TrustOption = False,
    dtype: DtypeOption = None,
) -> None:
    """Ask the model a question about a study's images."""
    from pipelines.drafting.ask import ask_command

    try:
        answer = ask_command(model, study, question, trust_remote_code=trust_remote_code, dtype=dtype)
    except known_errors() as exc:
        fail(exc)
    typer.echo(answer)


@app.command("export-dataset")
def export_dataset(
    out: Annotated[Path, typer.Option("--out", help="Output training folder (reports.jsonl + DICOM).")],
    db: DbOption = None,
    key_file: Annotated[Path | None, typer.Option(help="De-identification key (else $MEDVLM_DEID_KEY).")] = None,
    recipe: Annotated[Path | None, typer.Option(help="De-identification recipe (default: compliance/deid).")] = None,
    since: Annotated[str | None, typer.Option(help="Only versions signed at or after this ISO 8601 time.")] = None,
) -> None:
    """Export approved (signed) reports with their images, de-identified, as a fine-tuning dataset."""
    from datetime import datetime

    from pipelines.export.dataset import export_approved_pairs
    from pipelines.store import open_store

    try:
        with open_store(db) as store:
            summary = export_approved_pairs(store, out, key_file=key_file, recipe=recipe,
                                            since=datetime.fromisoformat(since) if since else None)
    except known_errors() as exc:
        fail(exc)
    print_summary("export-dataset", summary.as_dict())


audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")



@audit_app.command("verify")
def audit_verify(
    db: DbOption = None,
    actor: Annotated[str, typer.Option(help="Who is verifying (recorded in the log).")] = "cli",
) -> None:
    """Verify the audit chain (hashes, keyed MACs, head) and every sign-off; exit 1 naming the first break."""
    from compliance.audit import AuditError, append_event
    from pipelines.store import open_store
    from pipelines.store.integrity import check_integrity

    try:
        with open_store(db) as store:
            report = check_integrity(store)
            # Reading the audit log is itself an audited event; logged after the check so it cannot mask it.
            with store.transaction() as session:
                append_event(session, actor=actor, action="audit.verify", object_type="audit_log",
                             object_id="chain", outcome="ok" if report.ok else "broken",
                             details={"checked": report.events_checked, "broken": report.broken})
    except (AuditError, *known_errors()) as exc:
        fail(exc)
    if report.ok:
        print_summary("audit verify: OK", {"events checked": report.events_checked, "head hash": report.head_hash[:16]})
        return
    console.print(f"[bold red]audit chain BROKEN[/] at {report.broken}: {report.reason}", markup=True, highlight=False)
    raise typer.Exit(code=1)


if __name__ == "__main__":  # pragma: no cover
    app()
