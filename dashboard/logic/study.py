"""One study: what the Study page shows, its images, and the reader's actions on its report.

Review actions (open, edit, approve, reject) are single calls into ``pipelines.store.reviews``,
which checks each action's rules and writes the change with its audit events in ONE transaction;
this module only passes the user's name and role and returns what the store returns. Versions are
immutable: an edit and a sign-off each add or bind to a version whose parent is the version the
reader was looking at; a sign-off is bound to its version's content hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashboard.auth import User
from pipelines.store import logins, questions, reviews
from pipelines.store.study_detail import DraftInfo, QuestionInfo, study_label
from pipelines.store.study_detail import load_study as load_study_info
from pipelines.store.versions import ReviewError, SignatureRoleError, SignoffInfo, VersionInfo

if TYPE_CHECKING:
    from pipelines.store import Store

__all__ = ["SIGN_MEANING", "DraftView", "PermissionDenied", "QAView", "ReviewError", "SignoffView", "StudyDetail",
           "VersionView", "approve", "approve_text", "audit_failed_login", "audit_login", "frontal_image",
           "load_study", "open_study", "record_question", "reject", "save_edit", "seed_study", "study_images"]

SIGN_MEANING = "final report approved"
"""The meaning recorded with a sign-off (21 CFR 11.50-style: what the signature means)."""

PermissionDenied = SignatureRoleError
"""The user's role does not allow the action (a resident trying to sign); a ``ReviewError``."""

SignoffView = SignoffInfo
"""A sign-off as shown: the store's own detached record (who, role, when, meaning, bound hash)."""

VersionView = VersionInfo
"""One immutable report version as shown: the store's own detached record."""

DraftView = DraftInfo
"""The model's draft of a study: the store's record with parsed sentences and flags."""

QAView = QuestionInfo
"""One stored question and answer (user, question, answer, model version, when)."""

_FRONTAL = ("PA", "AP", "FRONTAL")


@dataclass(frozen=True)
class StudyDetail:
    """Everything the study page shows."""

    study_uid: str
    label: str
    status: str
    priority: int
    received_at: datetime
    indication: str | None
    images: list[tuple[str, Path]]
    draft: DraftView | None
    versions: list[VersionView]
    questions: list[QAView]

    @property
    def latest(self) -> VersionView | None:
        """The newest version, or None before any."""
        return self.versions[-1] if self.versions else None


def _view_rank(view: str) -> int:
    return {"PA": 0, "AP": 1, "FRONTAL": 1, "LATERAL": 2, "LL": 2, "RL": 2}.get(view.upper(), 3)


def study_images(source: str, metadata: Mapping[str, Any] | None) -> list[tuple[str, Path]]:
    """The (view, path) images recorded for a study, frontal first.

    Two layouts are read: the batch job's parallel lists ``metadata["files"]`` / ``metadata["views"]``
    (absolute paths and view names), and ``metadata["images"]`` / ``metadata["views"]`` as dicts with
    ``path`` and ``view`` (relative paths are under ``source`` when it is a folder, else beside it).
    Nothing else is guessed: a folder is never scanned for "its" images, because a source folder holds
    other patients' studies too. No recorded image gives an empty list (the page says so).
    """
    meta = metadata or {}
    base = Path(source) if source else Path(".")
    if base.is_file():
        base = base.parent
    found: list[tuple[str, Path]] = []
    files, views = meta.get("files") or [], meta.get("views") or []
    if files and all(isinstance(f, str) for f in files):
        names = [str(v) if isinstance(v, str) else "UNKNOWN" for v in views] + ["UNKNOWN"] * len(files)
        found = [(names[k].upper(), Path(f)) for k, f in enumerate(files)]
    else:
        for key in ("images", "views"):
            for item in meta.get(key) or []:
                if isinstance(item, Mapping) and item.get("path"):
                    p = Path(str(item.get("source_path") or item["path"]))
                    found.append((str(item.get("view") or "UNKNOWN").upper(), p if p.is_absolute() else base / p))
            if found:
                break
    return sorted(found, key=lambda vp: _view_rank(vp[0]))


def frontal_image(images: Sequence[tuple[str, Path]]) -> Path | None:
    """The frontal (PA, else AP) image among a study's ``(view, path)`` images (``study_images``), or None."""
    for view in _FRONTAL:
        for v, path in images:
            if v == view:
                return path
    return None


def load_study(store: Store, study_uid: str) -> StudyDetail:
    """Load one study with its latest draft, every version (oldest first), its Q&A and its images.

    Raises:
        ReviewError: no such study.
    """
    info = load_study_info(store, study_uid)
    meta = info.metadata
    return StudyDetail(
        study_uid=info.study_uid,
        label=study_label(info.study_uid, meta),
        status=info.status,
        priority=info.priority,
        received_at=info.received_at,
        indication=str(meta["indication"]) if meta.get("indication") else None,
        images=study_images(info.source, meta),
        draft=info.draft,
        versions=info.versions,
        questions=info.questions,
    )


def open_study(store: Store, user: User, study_uid: str) -> StudyDetail:
    """Open a study for review: version 1 is created from the draft if none exists; the view is audited.

    Args:
        store: the review store.
        user: who opens it.
        study_uid: the study.

    Returns:
        The study as loaded after the (possible) first version was created.

    Raises:
        ReviewError: no such study.
    """
    reviews.open_study(store, study_uid, actor=user.username, role=user.role)
    return load_study(store, study_uid)


def save_edit(store: Store, user: User, study_uid: str, findings: str, impression: str, *,
              expected_version: int | None = None) -> VersionView:
    """Save an edit as a new unsigned version (editing a signed report also makes a new unsigned one).

    Args:
        store: the review store.
        user: the editor (any role may edit).
        study_uid: the study.
        findings: new FINDINGS text.
        impression: new IMPRESSION text.
        expected_version: the version the editor started from; a newer one in the store refuses
            the save (someone else changed it).

    Returns:
        The new version.

    Raises:
        ReviewError: nothing changed, no version yet, or the report changed meanwhile.
    """
    return reviews.edit_report(store, study_uid, findings, impression, author=user.username, role=user.role,
                               expected_version=expected_version)


def approve(store: Store, user: User, study_uid: str, *, expected_version: int | None = None,
            meaning: str = SIGN_MEANING) -> VersionView:
    """Sign the current version: it becomes immutable, with a sign-off bound to its content hash.

    Args:
        store: the review store.
        user: the signer (radiologists only; a refusal is audited).
        study_uid: the study.
        expected_version: the version the signer read; a newer one refuses the signature.
        meaning: what the signature means.

    Returns:
        The signed version (with its sign-off).

    Raises:
        PermissionDenied: the user is not a radiologist.
        ReviewError: no version, already signed or rejected, or the report changed meanwhile.
    """
    return reviews.sign_report(store, study_uid, signer=user.username, role=user.role, meaning=meaning,
                               expected_version=expected_version)


def approve_text(store: Store, user: User, study_uid: str, findings: str, impression: str, *,
                 expected_version: int | None = None, meaning: str = SIGN_MEANING) -> VersionView:
    """Sign exactly the text in the editor: saved as a new version first when it was changed (one transaction).

    Args:
        store: the review store.
        user: the signer (radiologists only; checked before anything is saved).
        study_uid: the study.
        findings: the FINDINGS text on screen.
        impression: the IMPRESSION text on screen.
        expected_version: the version the editor started from.
        meaning: what the signature means.

    Returns:
        The signed version.

    Raises:
        PermissionDenied: the user is not a radiologist (nothing is saved).
        ReviewError: as ``save_edit`` / ``approve``.
    """
    return reviews.sign_report(store, study_uid, signer=user.username, role=user.role, meaning=meaning,
                               expected_version=expected_version, findings=findings, impression=impression)


def reject(store: Store, user: User, study_uid: str, reason: str, *,
           expected_version: int | None = None) -> VersionView:
    """Reject the current version with a reason (kept with the version, never in the audit log).

    Args:
        store: the review store.
        user: who rejects (any role).
        study_uid: the study.
        reason: why (required).
        expected_version: the version the reader saw.

    Returns:
        The rejected version.

    Raises:
        ReviewError: empty reason, no version, not an unsigned version, or the report changed.
    """
    return reviews.reject_report(store, study_uid, reason, actor=user.username, role=user.role,
                                 expected_version=expected_version)


def record_question(store: Store, user: User, study_uid: str, question: str, answer: str,
                    model_version: str) -> int:
    """Store one question and the model's answer with the study (audited by the store); returns its id."""
    return questions.ask_question(store, study_uid, user=user.username, question=question, answer=answer,
                                  model_version=model_version)


def audit_login(store: Store, user: User) -> None:
    """Record a successful log-in in the audit log."""
    logins.record_login(store, user.username, user.role)


def audit_failed_login(store: Store, username: str) -> None:
    """Record a refused log-in (unknown user or wrong password); the password is never stored."""
    logins.record_failed_login(store, username)


def seed_study(store: Store, *, study_uid: str, source: str, metadata: Mapping[str, Any], findings: str,
               impression: str, sentences: Iterable[Mapping[str, Any]], flags: Mapping[str, Any] | None = None,
               model_version: str = "demo", priority: int = 0, prompt_hash: str = "0" * 64) -> int:
    """Record a study, queue, claim and complete its drafting job with the given draft.

    What the batch drafting job leaves behind, through the store's own job functions; for the
    demo and tests.

    Returns:
        The draft id.

    Raises:
        ReviewError: the seeded job could not be claimed.
    """
    from pipelines.store import jobs
    from pipelines.store.studies import add_study

    add_study(store, study_uid, source=source, priority=priority, metadata=dict(metadata))
    job_id = jobs.enqueue(store, study_uid, model_version, prompt_hash, source=source, priority=priority)
    worker = "seed"
    job = jobs.claim(store, worker, 60.0)
    while job is not None and job.id != job_id:  # other queued jobs: leave them leased to "seed"
        job = jobs.claim(store, worker, 60.0)
    if job is None:
        raise ReviewError("the seeded job could not be claimed")
    return jobs.complete(store, job_id, worker, jobs.DraftPayload(
        findings=findings, impression=impression, sentences=[dict(s) for s in sentences], flags=dict(flags or {})))
