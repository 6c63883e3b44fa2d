"""Sign-off export: signed report versions → DICOM SR (C-STORE or STOW-RS) + FHIR DiagnosticReport JSON.

For each signed version not yet exported (or, with ``include_unsigned``, each study's latest
unsigned draft, marked UNVERIFIED / preliminary), the SR is built with `dicom_io.sr.build_report_sr`
from the source study's own DICOM headers (their paths were recorded in the study metadata at
draft time), the verifying observer being the signer. It is sent to the sink, the FHIR resource is
written, and an audit event ``report.export`` (object: the version id) records the outcome.

A signed version is sent only when its keyed signature verifies (``pipelines.store.signatures``):
one whose text, sign-off or signature was rewritten is counted as failed (``signature_invalid``)
and audited, never sent as VERIFIED. Deadlines: ``connect_timeout_s`` per connection,
``send_timeout_s`` per instance, ``deadline_s`` for the whole run (what is left then is counted as
failed, ``deadline_exceeded``). ``medvlm export`` exits non-zero when anything failed.

Idempotency: a version with a successful ``report.export`` event is skipped; ``resend`` sends it
again. The SR's Series/SOP Instance UIDs derive from a hash of (study, version number, content
hash, verified), so a resend yields the same instance and the PACS keeps one copy, while two
studies with the same report text never share a UID.

No patient data reaches logs, audit details or file names (files are named by pseudonym).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipelines.errors import PipelineError
from pipelines.store import Store

EXPORT_ACTION = "report.export"
CONNECT_TIMEOUT_S = 10.0
"""Default bound on opening a connection to the PACS."""
SEND_TIMEOUT_S = 30.0
"""Default bound on sending one SR (association or HTTP request and the PACS's answer)."""
DEADLINE_S = 600.0
"""Default bound on a whole export run; what is not sent by then is counted as failed."""


class ExportError(PipelineError, RuntimeError):
    """The export cannot run as asked (bad sink string, unknown study)."""


@dataclass(frozen=True)
class Sink:
    """Where SRs go.

    Attributes:
        kind: ``stow``, ``cstore`` or ``none`` (write FHIR / SR files only).
        url: DICOMweb root for ``stow``.
        host: PACS host for ``cstore``.
        port: PACS DICOM port for ``cstore``.
        called_aet: the PACS's AE title for ``cstore``.
    """

    kind: str
    url: str | None = None
    host: str | None = None
    port: int | None = None
    called_aet: str | None = None


def parse_sink(spec: str | None) -> Sink:
    """Parse ``stow:URL``, ``cstore://AET@HOST:PORT`` or None/``none``.

    Raises:
        ExportError: any other form.
    """
    if spec is None or spec.strip().lower() in ("", "none"):
        return Sink("none")
    text = spec.strip()
    if text.startswith("stow:"):
        url = text[len("stow:"):]
        if not url.startswith(("http://", "https://")):
            raise ExportError(f"STOW-RS sink must be stow:http(s)://HOST:PORT/dicom-web, got {text!r}")
        return Sink("stow", url=url.rstrip("/"))
    if text.startswith("cstore://"):
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.username or not parts.hostname or port is None:
            raise ExportError(f"C-STORE sink must be cstore://AET@HOST:PORT, got {text!r}")
        return Sink("cstore", host=parts.hostname, port=port, called_aet=parts.username)
    raise ExportError(f"unknown sink {text!r}: use stow:URL or cstore://AET@HOST:PORT")


@dataclass(frozen=True)
class ExportSummary:
    """What one export run did."""

    exported: int
    """Versions sent (or written, with no sink) now."""
    skipped: int
    """Versions already exported (not resent)."""
    failed: dict[str, int] = field(default_factory=dict)
    """Versions that could not be exported, by error code."""
    fhir_files: list[str] = field(default_factory=list)
    """FHIR DiagnosticReport files written."""
    sr_files: list[str] = field(default_factory=list)
    """SR files written (with ``sr_out``)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return asdict(self)

    @property
    def ok(self) -> bool:
        """True when nothing failed (the CLI exits non-zero otherwise)."""
        return not self.failed


def sr_version_hash(study_uid: str, version: int, content_hash: str, verified: bool) -> str:
    """The hash the SR UIDs derive from: unique per study and version, stable across resends."""
    key = f"{study_uid}\0{version}\0{content_hash}\0{'verified' if verified else 'unverified'}"
    return hashlib.sha256(key.encode()).hexdigest()


def _candidates(store: Store, study_uid: str | None, include_unsigned: bool) -> list[Any]:
    """(VersionInfo) to export: every signed version; with include_unsigned, latest unsigned drafts."""
    from pipelines.store.exports import studies_with_versions
    from pipelines.store.reviews import list_versions
    from pipelines.store.studies import has_study

    if study_uid is not None:
        if not has_study(store, study_uid):
            raise ExportError("no such study in the store (check --study)")
        uids = [study_uid]
    else:
        uids = studies_with_versions(store, signed_only=not include_unsigned)
    out = []
    for uid in uids:
        versions = list_versions(store, uid)
        out.extend(v for v in versions if v.status == "signed")
        if include_unsigned and versions and versions[-1].status == "draft":
            out.append(versions[-1])
    return out


def _already_exported(store: Store, version_id: int) -> bool:
    from compliance.audit import find_events

    with store.transaction() as session:
        return bool(find_events(session, action=EXPORT_ACTION, object_type="report_version",
                                object_id=str(version_id), outcome="ok", limit=1))


def _record(store: Store, actor: str, version_id: int, outcome: str, details: dict[str, Any]) -> None:
    from compliance.audit import append_event

    with store.transaction() as session:
        append_event(session, actor=actor, action=EXPORT_ACTION, object_type="report_version",
                     object_id=str(version_id), outcome=outcome, details=details)


def _source_files(store: Store, study_uid: str) -> list[Path]:
    from pipelines.store.studies import get_study_metadata

    files = [Path(p) for p in get_study_metadata(store, study_uid).get("files") or []]
    return [p for p in files if p.is_file()]


def _accession(path: Path) -> str | None:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["AccessionNumber"])
    value = str(ds.get("AccessionNumber", "") or "").strip()
    return value or None


def _send(ds: Any, sink: Sink, calling_aet: str, timeout_s: float, connect_timeout_s: float) -> None:
    from dicom_io.sinks import send_cstore, send_stow

    if sink.kind == "stow":
        send_stow(ds, sink.url, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
    elif sink.kind == "cstore":
        send_cstore(ds, sink.host, int(sink.port), sink.called_aet, calling_aet, timeout_s=timeout_s,
                    connect_timeout_s=connect_timeout_s)


def _refusal(store: Store, version: Any, verified: bool, started: float, deadline_s: float) -> str | None:
    """Why this version must not be sent now (a typed reason code), or None."""
    from pipelines.store.versions import signoff_failure

    if verified and signoff_failure(store, version.id) is not None:
        return "signature_invalid"
    if time.monotonic() - started >= deadline_s:
        return "deadline_exceeded"
    return None


def export_reports(store: Store, *, sink: Sink, study_uid: str | None = None, fhir_out: Path | None = None,
                   sr_out: Path | None = None, include_unsigned: bool = False, resend: bool = False,
                   actor: str = "medvlm-export", calling_aet: str = "MEDVLM", institution: str | None = None,
                   send_timeout_s: float = SEND_TIMEOUT_S, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                   deadline_s: float = DEADLINE_S) -> ExportSummary:
    """Export signed versions (see the module docstring).

    Args:
        store: the open store.
        sink: where SRs go (`parse_sink`).
        study_uid: one study, or None for every study with a signed version.
        fhir_out: folder for FHIR DiagnosticReport JSON files (``<pseudonym>-v<N>.json``); None = none.
        sr_out: folder for the SR files as sent (``<pseudonym>-v<N>.dcm``); None = none.
        include_unsigned: also export each study's latest unsigned draft as UNVERIFIED / preliminary.
        resend: export versions already exported again (same SR UIDs: the PACS keeps one copy).
        actor: recorded in the audit log.
        calling_aet: our AE title for C-STORE.
        institution: InstitutionName written into the SR.
        send_timeout_s: deadline of one SR's send (association/request and the PACS's answer).
        connect_timeout_s: deadline of opening a connection.
        deadline_s: deadline of the whole run; versions not sent by then fail as ``deadline_exceeded``.

    Returns:
        Counts, and the files written.

    Raises:
        ExportError: an unknown study, or a non-positive timeout.
        SigningKeyError: a signed version is to be exported and ``$MEDVLM_SIGNING_KEY`` is not set.
    """
    from dicom_io.errors import DicomIOError
    from dicom_io.fhir import build_diagnostic_report
    from dicom_io.sr import build_report_sr
    from pipelines.store.versions import SigningKeyError

    for name, value in (("send timeout", send_timeout_s), ("connect timeout", connect_timeout_s),
                        ("deadline", deadline_s)):
        if not value > 0:
            raise ExportError(f"the {name} must be a positive number of seconds, got {value}")
    started = time.monotonic()
    exported, skipped, failed = 0, 0, {}
    fhir_files: list[str] = []
    sr_files: list[str] = []
    for folder in (fhir_out, sr_out):
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
    candidates = _candidates(store, study_uid, include_unsigned)
    if store.signing_key is None and any(v.status == "signed" for v in candidates):
        raise SigningKeyError()
    for version in candidates:
        verified = version.status == "signed"
        if not resend and _already_exported(store, version.id):
            skipped += 1
            continue
        base = {"sink": sink.kind, "verified": verified, "version": version.version}
        refusal = _refusal(store, version, verified, started, deadline_s)
        if refusal is not None:
            failed[refusal] = failed.get(refusal, 0) + 1
            _record(store, actor, version.id, "refused" if refusal == "signature_invalid" else "failed",
                    {**base, "code": refusal})
            continue
        stem = f"{store.pseudonym(version.study_uid).replace(':', '-')}-v{version.version}"
        when = version.signoff.signed_at if verified else version.created_at
        observer = version.signoff.signer if verified else None
        vhash = sr_version_hash(version.study_uid, version.version, version.content_hash, verified)
        try:
            files = _source_files(store, version.study_uid)
            if not files:
                raise _Missing
            ds = build_report_sr(files, version.findings, version.impression, verifying_observer=observer,
                                 verified=verified, signed_at=when, version_hash=vhash, institution=institution)
            left = deadline_s - (time.monotonic() - started)
            _send(ds, sink, calling_aet, max(0.1, min(send_timeout_s, left)), connect_timeout_s)
            if sr_out is not None:
                path = Path(sr_out) / f"{stem}.dcm"
                ds.save_as(path, enforce_file_format=True)
                sr_files.append(str(path))
            if fhir_out is not None:
                resource = build_diagnostic_report(
                    study_uid=version.study_uid, findings=version.findings, impression=version.impression,
                    verified=verified, signed_at=when, version_hash=vhash, verifying_observer=observer,
                    accession_number=_accession(files[0]))
                path = Path(fhir_out) / f"{stem}.json"
                path.write_text(json.dumps(resource, indent=2, sort_keys=True) + "\n", encoding="utf-8")
                fhir_files.append(str(path))
        except _Missing:
            code = "source_missing"
        except DicomIOError as exc:
            code = exc.code
        except Exception as exc:  # noqa: BLE001 - one bad study must not stop the export
            code = type(exc).__name__
        else:
            _record(store, actor, version.id, "ok", {**base, "fhir": fhir_out is not None})
            exported += 1
            continue
        failed[code] = failed.get(code, 0) + 1
        _record(store, actor, version.id, "failed", {**base, "code": code[:64]})
    return ExportSummary(exported, skipped, failed, fhir_files, sr_files)


class _Missing(PipelineError):
    """The study's source files are gone: an SR without the patient's identity cannot be filed."""


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
    send_timeout_s: float = SEND_TIMEOUT_S,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    deadline_s: float = DEADLINE_S,
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
        send_timeout_s: deadline of one SR's send.
        connect_timeout_s: deadline of opening a connection.
        deadline_s: deadline of the whole run.

    Returns:
        `pipelines.export.reports.ExportSummary` (``ok`` False when any version failed).
    """
    from pipelines.export.reports import export_reports, parse_sink
    from pipelines.store import open_store

    parsed = parse_sink(sink)
    study_uid = None if study in (None, "", "all") else study
    with open_store(db) as store:
        return export_reports(store, sink=parsed, study_uid=study_uid, fhir_out=fhir_out, sr_out=sr_out,
                              include_unsigned=include_unsigned, resend=resend, actor=actor,
                              calling_aet=calling_aet, send_timeout_s=send_timeout_s,
                              connect_timeout_s=connect_timeout_s, deadline_s=deadline_s)
