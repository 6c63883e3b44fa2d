"""Intake of the drafting job: read, gate and normalise each study's files, then queue the study.

Each study from the source is read, gated (chest CR/DX) and normalised file by file
(`dicom_io.gate.load_chest_image`); bad files are set aside with their typed reason code, and a
study left without a frontal (PA/AP) image is quarantined in the store with a reason. Entries the
source set aside unread (FIFOs, sockets, link loops, links out of the folder, names that are not
UTF-8: `dicom_io.scan.SkippedEntry`) arrive alone under a ``file-...`` key and are quarantined the
same way, each with its reason. Good studies
are recorded (`add_study`, with the accepted files' paths in the study metadata: the export re-reads
their headers), linked to the same patient's other studies (`pipelines.store.priors.link_study`: a
keyed pseudonym of the frontal file's Patient ID and its study date, never the ID itself) and queued
(`enqueue`, idempotent). A worker later reads the recorded model inputs
back with `load_study_input`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.drafting.identity import DraftOptions, ModelIdentity
from pipelines.errors import PipelineError
from pipelines.store import Store
from pipelines.store.jobs import enqueue, job_state
from pipelines.store.priors import PatientHeader, link_study
from pipelines.store.studies import add_study, quarantine_study, set_study_metadata

if TYPE_CHECKING:
    from dicom_io.scan import SkippedEntry
    from medvlm.generate import StudyInput

FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEW = "LATERAL"
NO_FRONTAL = "no_frontal_view"
NO_IMAGES = "no_images"


class QuarantineError(PipelineError):
    """Bad input: the file or study is set aside with a reason instead of being retried.

    Args:
        code: a short machine-readable reason (``not_chest``, ``unreadable_pixels``, ...).
        message: a sentence without PHI.
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PreparedStudy:
    """What intake learnt about one study.

    Attributes:
        study_uid: the study key (Study Instance UID, or ``file-...`` for files without one).
        metadata: JSON for the store (accepted file paths, views, the chosen model inputs,
            rejected files by name and reason); no header values.
        quarantine_code: set when the study cannot be drafted.
        quarantine_message: a PHI-free sentence saying why.
        rejected: reason code of each rejected file.
        patient: the frontal file's Patient ID and study date (PHI, kept out of ``metadata`` and
            ``repr``); None without a frontal or when its header cannot be read again.
    """

    study_uid: str
    metadata: dict[str, Any]
    quarantine_code: str | None = None
    quarantine_message: str = ""
    rejected: tuple[str, ...] = ()
    patient: PatientHeader | None = field(default=None, repr=False)


def prepare_study(study_key: str, files: Iterable[Path], *, window: str = "auto",
                  skipped: Sequence[SkippedEntry] = ()) -> PreparedStudy:
    """Read, gate and normalise each file of a study, then choose the model's views.

    Args:
        study_key: the source's key of the study.
        files: its local files.
        window: intensity rule for normalisation.
        skipped: entries the source set aside unread; recorded as rejected with their reason.

    Returns:
        The prepared study; ``quarantine_code`` is set when no frontal image was accepted.
    """
    from dicom_io.errors import DicomIOError
    from dicom_io.gate import load_chest_image
    from dicom_io.scan import printable_name

    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, str]] = [{"file": e.name, "code": e.code, "detail": e.detail} for e in skipped]
    seen_sops: set[str] = set()
    for path in sorted(Path(p) for p in files):
        name = printable_name(path.name)  # names may hold bytes that are not UTF-8
        try:
            _, meta = load_chest_image(path, window=window)
            if meta.sop_uid in seen_sops:
                raise QuarantineError("duplicate", "same SOP Instance UID as another file of the study")
            seen_sops.add(meta.sop_uid)
        except DicomIOError as exc:
            rejected.append({"file": name, "code": exc.code})
            continue
        except QuarantineError as exc:
            rejected.append({"file": name, "code": exc.code})
            continue
        except Exception as exc:  # noqa: BLE001 - untrusted input: any failure sets the file aside
            rejected.append({"file": name, "code": "internal_error", "error": type(exc).__name__})
            continue
        accepted.append({"path": str(path.resolve()), "view": meta.view, "series_number": meta.series_number,
                         "instance_number": meta.instance_number})
    frontal = _pick(accepted, FRONTAL_VIEWS)
    lateral = _pick(accepted, (LATERAL_VIEW,))
    metadata: dict[str, Any] = {
        "files": [a["path"] for a in accepted],
        "views": [a["view"] for a in accepted],
        "inputs": [p for p in (frontal, lateral) if p],
        "rejected": rejected,
    }
    codes = tuple(r["code"] for r in rejected)
    if frontal is None:
        if not accepted:
            code = Counter(codes).most_common(1)[0][0] if codes else NO_IMAGES
            msg = (f"{len(skipped)} entry(ies) set aside unread: {skipped[0].detail}" if skipped and not files
                   else f"none of the {len(rejected)} file(s) is a usable chest radiograph")
        else:
            code, msg = NO_FRONTAL, f"no PA/AP image among {len(accepted)} accepted image(s)"
        return PreparedStudy(study_key, metadata, code, msg, codes)
    return PreparedStudy(study_key, metadata, None, "", codes, patient=read_patient_header(frontal))


def read_patient_header(path: str | Path) -> PatientHeader | None:
    """The Patient ID, its issuer, StudyDate and StudyTime of one file (header only), or None if unreadable."""
    from dicom_io.errors import DicomIOError
    from dicom_io.reader import read

    try:
        ds = read(path, stop_before_pixels=True)
        return PatientHeader(*(str(ds.get(k, "") or "").strip()
                               for k in ("PatientID", "IssuerOfPatientID", "StudyDate", "StudyTime")))
    except (DicomIOError, ValueError, TypeError):  # read once already: a file changed since is not linked
        return None


def _pick(accepted: list[dict[str, Any]], views: tuple[str, ...]) -> str | None:
    """The path of the first accepted image with one of `views`, in the order the views are listed."""
    for view in views:
        for a in accepted:
            if a["view"] == view:
                return a["path"]
    return None


@dataclass
class IntakeStats:
    """What intake did with the studies of the source."""

    seen: int = 0
    """Studies taken from the source."""
    queued: int = 0
    """Newly queued for drafting."""
    resumed: int = 0
    """Already queued or leased by an earlier (interrupted) run: drafted by this run."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Not queued again, by the existing job's state (``done`` = already drafted)."""
    quarantined: dict[str, int] = field(default_factory=dict)
    """Quarantined at intake, by reason code."""
    files_rejected: dict[str, int] = field(default_factory=dict)
    """Files set aside inside otherwise usable studies, by reason code."""
    study_uids: list[str] = field(default_factory=list)
    """Studies this run queued or resumed."""


def intake_study(store: Store, study_key: str, files: Iterable[Path], ident: ModelIdentity, options: DraftOptions,
                 *, source: str, stats: IntakeStats, actor: str = "medvlm-draft",
                 skipped: Sequence[SkippedEntry] = ()) -> str:
    """Gate one study and queue it (idempotently). Returns ``queued``, ``resumed``, ``skipped:STATE``
    or ``quarantined:CODE``; `skipped` are entries the source set aside unread (see `prepare_study`)."""
    existing = job_state(store, study_key, ident.model_version, ident.prompt_hash)
    if existing is not None and existing[1] not in ("queued", "leased"):
        stats.skipped[existing[1]] = stats.skipped.get(existing[1], 0) + 1
        return f"skipped:{existing[1]}"
    files = list(files)
    prepared = prepare_study(study_key, files, window=options.window, skipped=skipped)
    if prepared.quarantine_code is not None:
        if existing is not None:  # queued earlier, bad now (files changed): leave it to the worker
            stats.resumed += 1
            stats.study_uids.append(study_key)
            return "resumed"
        quarantine_study(store, study_key, prepared.quarantine_code, prepared.quarantine_message,
                         source=source, metadata=prepared.metadata, actor=actor)
        stats.quarantined[prepared.quarantine_code] = stats.quarantined.get(prepared.quarantine_code, 0) + 1
        return f"quarantined:{prepared.quarantine_code}"
    for code in prepared.rejected:
        stats.files_rejected[code] = stats.files_rejected.get(code, 0) + 1
    created = add_study(store, study_key, source=source, metadata=prepared.metadata, actor=actor)
    if not created:  # known study (other model, earlier quarantine): refresh what we know of it
        set_study_metadata(store, study_key, prepared.metadata, reset_status=existing is None)
    link_study(store, study_key, prepared.patient)
    enqueue(store, study_key, ident.model_version, ident.prompt_hash, source=source,
            max_attempts=options.max_attempts, actor=actor)
    stats.study_uids.append(study_key)
    if existing is not None:
        stats.resumed += 1
        return "resumed"
    stats.queued += 1
    return "queued"


def load_study_input(metadata: dict[str, Any], image_size: int, *, window: str = "auto",
                     max_views: int | None = None) -> StudyInput:
    """Load a queued study's model inputs (frontal first, then lateral) at the model's image size.

    A model trained on fewer views than the study has (e.g. frontal only) gets the first `max_views`.

    Raises:
        QuarantineError: no input recorded, or the frontal image no longer loads (code of the error).
    """
    from dicom_io.errors import DicomIOError
    from dicom_io.reader import load_image
    from medvlm.generate import StudyInput

    paths = list(metadata.get("inputs") or [])[:max_views]
    if not paths:
        raise QuarantineError(NO_FRONTAL, "no frontal image recorded for the study")
    images = []
    for i, path in enumerate(paths):
        try:
            pixels, _ = load_image(path, window=window, size=image_size)
        except DicomIOError as exc:
            if i == 0:  # the frontal view is required; a lost lateral only narrows the input
                raise QuarantineError(exc.code, "the frontal image can no longer be read") from None
            continue
        images.append(pixels)
    return StudyInput(images=images)
