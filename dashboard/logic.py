"""Everything the dashboard does that is not drawing: queries, text safety, review actions, audit.

Streamlit files (``dashboard/app.py``, ``dashboard/ui/*``) only render what these functions return
(STYLE rule 21); every function here is tested without Streamlit.

Review actions (edit, approve, reject, ask) each run in one store transaction together with their
audit event (``compliance.audit.append_event``), so the change and its record commit together.
Versions are immutable: an edit, a sign-off and a rejection each add a new version whose parent is
the version the reader was looking at; a sign-off is bound to its version's content hash.

Text safety: model output and DICOM text are shown through Streamlit markdown only after
``escape_markdown``; nothing is ever rendered with ``unsafe_allow_html``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from compliance.audit import append_event
from dashboard.auth import User, can_sign
from pipelines.store import reviews
from pipelines.store.models import DraftRecord, JobRecord, Question, ReportVersion, Signoff, StudyRecord

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.store import Store

LOW_CONFIDENCE = 0.5
"""Sentences below this confidence are highlighted (the confidence is a token probability)."""
SIGN_MEANING = "final report approved"
"""The meaning recorded with a sign-off (21 CFR 11.50-style: what the signature means)."""
WORKLIST_LIMIT = 500
"""Rows the worklist table shows at most (counts always cover every matching study)."""
SORT_COLUMNS = ("priority", "received_at", "flags", "min_confidence", "status")
PAGES = ("Worklist", "Study", "Ask", "Model")

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$=&^])")


class ReviewError(reviews.ReviewError):
    """A review action cannot be done (nothing changed, unknown study, stale version).

    A subclass of the store's ``ReviewError``: pages catch that one for every refusal.
    """


class PermissionDenied(ReviewError):
    """The user's role does not allow the action (e.g. a resident trying to sign)."""


# --------------------------------------------------------------------------------------------
# Session state (declared once)


@dataclass
class WorklistFilters:
    """The worklist's filter and sort settings.

    Attributes:
        statuses: study statuses to show; empty = all.
        review: latest review state to show (``unreviewed``, ``draft``, ``signed``, ``rejected``);
            empty = all.
        date_from: first received date (inclusive, UTC), or None.
        date_to: last received date (inclusive, UTC), or None.
        min_priority: show studies with at least this priority.
        flagged: ``any``, ``flagged`` (at least one consistency flag) or ``clean``.
        sort_by: one of ``SORT_COLUMNS``.
        descending: sort order.
        limit: most rows returned.
    """

    statuses: tuple[str, ...] = ()
    review: tuple[str, ...] = ()
    date_from: date | None = None
    date_to: date | None = None
    min_priority: int = 0
    flagged: str = "any"
    sort_by: str = "priority"
    descending: bool = True
    limit: int = WORKLIST_LIMIT


@dataclass
class DashboardSession:
    """Everything one browser session keeps between reruns (the only session state).

    Attributes:
        user: the logged-in user, or None.
        page: the page shown, one of ``PAGES``.
        study_uid: the study open on the Study/Ask pages.
        filters: worklist filters.
        notice: a confirmation shown once after an action (e.g. "Signed version 3").
        edit_generation: bumped after each saved edit so the editor widgets reload.
    """

    user: User | None = None
    page: str = "Worklist"
    study_uid: str | None = None
    filters: WorklistFilters = field(default_factory=WorklistFilters)
    notice: str | None = None
    edit_generation: int = 0


SESSION_KEY = "medvlm_session"


def init_session(state: MutableMapping[str, Any]) -> DashboardSession:
    """Return the session's ``DashboardSession``, creating it on first use.

    Args:
        state: ``st.session_state`` (or any mutable mapping in tests).
    """
    if SESSION_KEY not in state:
        state[SESSION_KEY] = DashboardSession()
    return state[SESSION_KEY]


# --------------------------------------------------------------------------------------------
# Text safety and formatting


def escape_markdown(text: str) -> str:
    """Escape text so Streamlit markdown shows it literally.

    Every Markdown/HTML-significant ASCII punctuation character is backslash-escaped (CommonMark
    allows escaping any ASCII punctuation), which also disarms Streamlit's ``:color[...]`` and
    ``:emoji:`` directives and ``$`` LaTeX. Newlines become spaces (a sentence is one line), so
    headings, lists and block HTML cannot start.

    Args:
        text: untrusted text (model output, DICOM text, user text).

    Returns:
        Markdown source that renders as the same characters.
    """
    flat = re.sub(r"[\r\n\t\v\f]+", " ", str(text))
    return _MD_SPECIAL.sub(r"\\\1", flat)


@dataclass(frozen=True)
class SentenceView:
    """One draft sentence for display.

    Attributes:
        text: the sentence.
        section: ``findings`` or ``impression``.
        confidence: in [0, 1], or None when unknown.
        index: position over findings then impression (what flags refer to).
    """

    text: str
    section: str
    confidence: float | None
    index: int


@dataclass(frozen=True)
class FlagView:
    """One consistency flag for display.

    Attributes:
        code: e.g. ``contradiction``.
        message: the flag's message.
        sentence_indices: sentences involved.
    """

    code: str
    message: str
    sentence_indices: tuple[int, ...]


def parse_sentences(raw: Any) -> list[SentenceView]:
    """Normalise a draft's stored ``sentences`` (list of dicts) into ``SentenceView``s.

    Unknown shapes are skipped; a missing confidence stays None (shown as unknown, not as low).
    """
    out: list[SentenceView] = []
    for item in raw or []:
        if isinstance(item, str):
            out.append(SentenceView(item, "findings", None, len(out)))
            continue
        if not isinstance(item, Mapping) or not str(item.get("text", "")).strip():
            continue
        conf = item.get("confidence")
        conf_f = float(conf) if isinstance(conf, int | float) else None
        section = str(item.get("section") or "findings").lower()
        out.append(SentenceView(str(item["text"]).strip(), section, conf_f, len(out)))
    return out


def parse_flags(raw: Any) -> list[FlagView]:
    """Normalise a draft's stored ``flags`` into ``FlagView``s.

    Accepts a list of flag mappings (``code``, ``message``, ``sentence_indices``), or a mapping whose
    list values hold such mappings (``{"consistency": [...], "low_confidence": [...]}``), or a
    mapping of code → message.
    """
    items: list[Any] = []
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            if isinstance(value, list):
                items.extend(v if isinstance(v, Mapping) else {"code": key, "message": str(v)} for v in value)
            elif isinstance(value, Mapping):
                items.append({"code": key, **value})
            elif isinstance(value, str):
                items.append({"code": key, "message": value})
    elif isinstance(raw, list | tuple):
        items = list(raw)
    out: list[FlagView] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        idx = item.get("sentence_indices") or ()
        out.append(FlagView(
            code=str(item.get("code", "flag")),
            message=str(item.get("message", "")),
            sentence_indices=tuple(int(i) for i in idx if isinstance(i, int)),
        ))
    return out


def sentence_markdown(sentence: SentenceView, *, threshold: float = LOW_CONFIDENCE,
                      flagged: bool = False) -> str:
    """Markdown for one sentence: escaped, low-confidence ones on an orange background.

    Args:
        sentence: the sentence.
        threshold: confidence below which the sentence is highlighted.
        flagged: the sentence takes part in a consistency flag (red background).

    Returns:
        Markdown source (the text always escaped).
    """
    text = escape_markdown(sentence.text)
    if flagged:
        return f":red-background[⚑ {text}]"
    if sentence.confidence is not None and sentence.confidence < threshold:
        return f":orange-background[{text}]"
    return text


def section_markdown(sentences: Sequence[SentenceView], section: str, flags: Sequence[FlagView] = (),
                     *, threshold: float = LOW_CONFIDENCE) -> str:
    """Markdown for one report section (sentences joined by spaces); "" when it has none."""
    flagged = {i for f in flags for i in f.sentence_indices}
    parts = [sentence_markdown(s, threshold=threshold, flagged=s.index in flagged)
             for s in sentences if s.section == section]
    return " ".join(parts)


def version_diff(old: str, new: str) -> list[tuple[str, str]]:
    """Word-level diff of two report texts.

    Args:
        old: the earlier text.
        new: the later text.

    Returns:
        ``(op, text)`` runs in order, ``op`` one of ``=``, ``-`` (removed), ``+`` (added).
    """
    a, b = old.split(), new.split()
    runs: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            runs.append(("=", " ".join(a[i1:i2])))
            continue
        if tag in ("delete", "replace"):
            runs.append(("-", " ".join(a[i1:i2])))
        if tag in ("insert", "replace"):
            runs.append(("+", " ".join(b[j1:j2])))
    return runs


def diff_markdown(old: str, new: str) -> str:
    """Markdown of ``version_diff``: removed words struck through in red, added in green."""
    out = []
    for op, text in version_diff(old, new):
        esc = escape_markdown(text)
        out.append(esc if op == "=" else (f":red[~~{esc}~~]" if op == "-" else f":green[**{esc}**]"))
    return " ".join(out) or "*(no text)*"


def short_id(study_uid: str, metadata: Mapping[str, Any] | None = None) -> str:
    """A short label for a study: its accession/study id from the metadata, else the UID's tail."""
    meta = metadata or {}
    for key in ("accession", "study_id", "accession_number"):
        if meta.get(key):
            return str(meta[key])
    return "…" + study_uid[-8:]


# --------------------------------------------------------------------------------------------
# Worklist


def _latest_version_subquery():
    latest = (
        select(ReportVersion.study_uid, func.max(ReportVersion.version).label("v"))
        .group_by(ReportVersion.study_uid)
        .subquery()
    )
    return (
        select(ReportVersion.study_uid, ReportVersion.status.label("review"), ReportVersion.version)
        .join(latest, (latest.c.study_uid == ReportVersion.study_uid) & (latest.c.v == ReportVersion.version))
        .subquery()
    )


def _latest_draft_subquery():
    latest = (
        select(JobRecord.study_uid, func.max(DraftRecord.id).label("draft_id"))
        .join(DraftRecord, DraftRecord.job_id == JobRecord.id)
        .group_by(JobRecord.study_uid)
        .subquery()
    )
    return (
        select(latest.c.study_uid, latest.c.draft_id, DraftRecord.model_version)
        .join(DraftRecord, DraftRecord.id == latest.c.draft_id)
        .subquery()
    )


_CHUNK = 5000  # ids per IN (...) query; well under SQLite's bound-parameter limit


def _draft_summaries(session: Session, draft_ids: Sequence[int]) -> dict[int, tuple[int, float | None]]:
    """draft id → (number of flags, lowest sentence confidence); JSON decoded only for these ids."""
    out: dict[int, tuple[int, float | None]] = {}
    conn = session.connection()
    ids = [int(i) for i in draft_ids]
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        stmt = select(DraftRecord.id, DraftRecord.flags, DraftRecord.sentences).where(DraftRecord.id.in_(chunk))
        for did, flags, sentences in conn.execute(stmt):
            out[int(did)] = (len(parse_flags(flags)), _min_confidence(sentences))
    return out


def _study_labels(session: Session, uids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    conn = session.connection()
    for start in range(0, len(uids), _CHUNK):
        chunk = list(uids[start : start + _CHUNK])
        stmt = select(StudyRecord.study_uid, StudyRecord.metadata_json).where(StudyRecord.study_uid.in_(chunk))
        for uid, meta in conn.execute(stmt):
            out[uid] = short_id(uid, meta)
    return out


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def _min_confidence(sentences: Any) -> float | None:
    vals = [s.get("confidence") for s in sentences or [] if isinstance(s, Mapping)]
    vals = [float(v) for v in vals if isinstance(v, int | float)]
    return min(vals) if vals else None


def worklist_counts(session: Session) -> dict[str, int]:
    """Studies per status (every study in the store, whatever the filters)."""
    rows = session.execute(select(StudyRecord.status, func.count()).group_by(StudyRecord.status)).all()
    return {str(s): int(n) for s, n in rows}


def load_worklist(session: Session, filters: WorklistFilters) -> tuple[pd.DataFrame, int]:
    """Query the worklist: one row per study with its review state, flags and lowest confidence.

    Args:
        session: an open store session (read only).
        filters: what to show and in which order.

    Returns:
        ``(table, total)``: a DataFrame of at most ``filters.limit`` rows with columns
        ``study_uid, study, status, review, priority, received_at, flags, min_confidence,
        model_version`` and the number of studies matching the filters.

    Raises:
        ValueError: unknown ``sort_by`` or ``flagged`` value.
    """
    import pandas as pd

    if filters.sort_by not in SORT_COLUMNS:
        raise ValueError(f"sort_by must be one of {', '.join(SORT_COLUMNS)}; got {filters.sort_by!r}")
    if filters.flagged not in ("any", "flagged", "clean"):
        raise ValueError(f"flagged must be any, flagged or clean; got {filters.flagged!r}")
    ver = _latest_version_subquery()
    dr = _latest_draft_subquery()
    # Phase 1: every matching study, without any JSON column (decoding JSON dominates the cost).
    stmt = (
        select(StudyRecord.study_uid, StudyRecord.status, StudyRecord.priority, StudyRecord.received_at,
               ver.c.review, dr.c.draft_id, dr.c.model_version)
        .outerjoin(ver, ver.c.study_uid == StudyRecord.study_uid)
        .outerjoin(dr, dr.c.study_uid == StudyRecord.study_uid)
    )
    if filters.statuses:
        stmt = stmt.where(StudyRecord.status.in_(filters.statuses))
    if filters.review:
        review = list(filters.review)
        cond = ver.c.review.in_([r for r in review if r != "unreviewed"])
        if "unreviewed" in review:
            cond = cond | ver.c.review.is_(None)
        stmt = stmt.where(cond)
    if filters.date_from is not None:
        stmt = stmt.where(StudyRecord.received_at >= _day_start(filters.date_from))
    if filters.date_to is not None:
        stmt = stmt.where(StudyRecord.received_at < _day_start(filters.date_to) + timedelta(days=1))
    if filters.min_priority:
        stmt = stmt.where(StudyRecord.priority >= filters.min_priority)
    columns = ["study_uid", "status", "review", "priority", "received_at", "draft_id", "model_version"]
    rows = session.connection().execute(stmt).all()
    df = pd.DataFrame.from_records(
        [(r.study_uid, r.status, r.review or "unreviewed", int(r.priority or 0), r.received_at,
          r.draft_id, r.model_version or "") for r in rows], columns=columns)
    df["received_at"] = pd.to_datetime(df["received_at"], utc=True)
    # Phase 2: flags and confidences, for every row only when the filter or the sort needs them.
    needs_all = filters.flagged != "any" or filters.sort_by in ("flags", "min_confidence")

    def summarise(frame: pd.DataFrame) -> pd.DataFrame:
        ids = [int(i) for i in frame["draft_id"].dropna()]
        summary = _draft_summaries(session, ids)
        frame = frame.copy()
        frame["flags"] = [summary.get(int(i), (0, None))[0] if pd.notna(i) else 0 for i in frame["draft_id"]]
        frame["min_confidence"] = [summary.get(int(i), (0, None))[1] if pd.notna(i) else None
                                   for i in frame["draft_id"]]
        return frame

    def order(frame: pd.DataFrame) -> pd.DataFrame:
        # Ties: oldest first (first come, first read) under any primary order.
        return frame.sort_values([filters.sort_by, "received_at"], ascending=[not filters.descending, True],
                                 na_position="last", kind="stable")

    if needs_all:
        df = summarise(df)
        if filters.flagged == "flagged":
            df = df[df["flags"] > 0]
        elif filters.flagged == "clean":
            df = df[df["flags"] == 0]
        total = len(df)
        df = order(df).head(filters.limit)
    else:
        total = len(df)
        df = summarise(order(df).head(filters.limit))
    labels = _study_labels(session, list(df["study_uid"]))
    df.insert(1, "study", [labels.get(u, short_id(u)) for u in df["study_uid"]])
    out_cols = ["study_uid", "study", "status", "review", "priority", "received_at", "flags", "min_confidence",
                "model_version"]
    df["min_confidence"] = df["min_confidence"].astype("float64")
    return df[out_cols].reset_index(drop=True), total


# --------------------------------------------------------------------------------------------
# One study


SignoffView = reviews.SignoffInfo
"""A sign-off as shown: the store's own detached record (who, role, when, meaning, bound hash)."""

VersionView = reviews.VersionInfo
"""One immutable report version as shown: the store's own detached record."""


@dataclass(frozen=True)
class DraftView:
    """The model's draft of a study."""

    id: int
    findings: str
    impression: str
    sentences: list[SentenceView]
    flags: list[FlagView]
    model_version: str
    created_at: datetime


@dataclass(frozen=True)
class QAView:
    """One stored question and answer."""

    user: str
    question: str
    answer: str
    model_version: str
    created_at: datetime


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


def load_study(session: Session, study_uid: str) -> StudyDetail:
    """Load one study with its latest draft, every version (oldest first) and its Q&A.

    Raises:
        ReviewError: no such study.
    """
    study = session.execute(select(StudyRecord).where(StudyRecord.study_uid == study_uid)).scalar_one_or_none()
    if study is None:
        raise ReviewError("study not found in the review store")
    d = session.execute(
        select(DraftRecord).join(JobRecord, DraftRecord.job_id == JobRecord.id)
        .where(JobRecord.study_uid == study_uid).order_by(DraftRecord.id.desc()).limit(1)
    ).scalar_one_or_none()
    draft = None
    if d is not None:
        draft = DraftView(d.id, d.findings, d.impression, parse_sentences(d.sentences), parse_flags(d.flags),
                          d.model_version, d.created_at)
    rows = session.execute(
        select(ReportVersion, Signoff).outerjoin(Signoff, Signoff.version_id == ReportVersion.id)
        .where(ReportVersion.study_uid == study_uid).order_by(ReportVersion.version)
    ).all()
    qs = session.execute(select(Question).where(Question.study_uid == study_uid).order_by(Question.id)).scalars()
    meta = dict(study.metadata_json or {})
    return StudyDetail(
        study_uid=study.study_uid,
        label=short_id(study.study_uid, meta),
        status=study.status,
        priority=int(study.priority or 0),
        received_at=study.received_at,
        indication=str(meta["indication"]) if meta.get("indication") else None,
        images=study_images(study.source, meta),
        draft=draft,
        versions=[reviews.version_info(v, s) for v, s in rows],
        questions=[QAView(q.user, q.question, q.answer, q.model_version, q.created_at) for q in qs],
    )


# --------------------------------------------------------------------------------------------
# Review actions: thin wrappers over ``pipelines.store.reviews`` (which audits every change) that
# add the dashboard's checks (stale page, nothing changed, role) and audit what it alone does.


def _audit(store: Store, session: Session, user: User, action: str, study_uid: str, *,
           outcome: str = "ok", details: Mapping[str, Any] | None = None) -> None:
    append_event(session, actor=user.username, action=action, object_type="study",
                 object_id=store.pseudonym(study_uid), outcome=outcome,
                 details={"role": user.role, **(details or {})})


def _current(store: Store, study_uid: str, expected_version: int | None):  # noqa: ANN202
    versions = reviews.list_versions(store, study_uid)
    if not versions:
        raise ReviewError("this study has no report version yet; open it first")
    latest = versions[-1]
    if expected_version is not None and latest.version != expected_version:
        raise ReviewError(f"the report changed while you were reading it (now version {latest.version}); "
                          "reload the study")
    return latest


def open_study(store: Store, user: User, study_uid: str) -> StudyDetail:
    """Open a study for review: create version 1 from the draft if none exists, audit the view.

    Args:
        store: the review store.
        user: who opens it.
        study_uid: the study.

    Returns:
        The study as loaded after the (possible) first version was created.

    Raises:
        ReviewError: no such study.
    """
    with store.transaction() as session:
        detail = load_study(session, study_uid)
        job_id = None
        if not detail.versions and detail.draft is not None:
            job_id = session.scalar(select(DraftRecord.job_id).where(DraftRecord.id == detail.draft.id))
    if job_id is not None:
        reviews.create_version_from_draft(store, int(job_id), author=f"medvlm:{detail.draft.model_version}")
    with store.transaction() as session:
        _audit(store, session, user, "study.open", study_uid, details={"first_version_created": job_id is not None})
        return load_study(session, study_uid) if job_id is not None else detail


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
    findings, impression = findings.strip(), impression.strip()
    latest = _current(store, study_uid, expected_version)
    if reviews.content_hash(findings, impression) == latest.content_hash:
        raise ReviewError(f"nothing changed: the text is the same as version {latest.version}")
    new = reviews.edit_version(store, latest.id, findings=findings, impression=impression, author=user.username)
    with store.transaction() as session:
        if latest.status == "signed":  # an addendum-like edit reopens the study for sign-off
            study = session.scalar(select(StudyRecord).where(StudyRecord.study_uid == study_uid))
            study.status = "drafted"
        _audit(store, session, user, "study.edit", study_uid,
               details={"version": new.version, "parent_version": latest.version})
    return new


def approve(store: Store, user: User, study_uid: str, *, expected_version: int | None = None,
            meaning: str = SIGN_MEANING) -> VersionView:
    """Sign the current version: it becomes immutable, with a sign-off bound to its content hash.

    Only radiologists may sign: any other role is refused here (and the refusal audited) before
    the store is asked; the store checks the role again.

    Args:
        store: the review store.
        user: the signer.
        study_uid: the study.
        expected_version: the version the signer read; a newer one refuses the signature.
        meaning: what the signature means.

    Returns:
        The signed version (with its sign-off).

    Raises:
        PermissionDenied: the user is not a radiologist.
        ReviewError: no version, already signed or rejected, or the report changed meanwhile.
    """
    if not can_sign(user.role):
        with store.transaction() as session:
            _audit(store, session, user, "study.sign", study_uid, outcome="refused",
                   details={"reason": "role may not sign"})
        raise PermissionDenied(f"only radiologists can sign reports; you are signed in as {user.role}")
    latest = _current(store, study_uid, expected_version)
    if latest.status != "draft":
        raise ReviewError(f"version {latest.version} is already {latest.status}; edit it to make a new version")
    try:
        reviews.sign_version(store, latest.id, signer=user.username, role=user.role, meaning=meaning)
    except reviews.SignatureRoleError as exc:
        raise PermissionDenied(str(exc)) from None
    except reviews.ReviewError as exc:
        raise ReviewError(str(exc)) from None
    with store.transaction() as session:
        _audit(store, session, user, "study.sign", study_uid, details={"version": latest.version})
    return reviews.list_versions(store, study_uid)[latest.version - 1]


def approve_text(store: Store, user: User, study_uid: str, findings: str, impression: str, *,
                 expected_version: int | None = None, meaning: str = SIGN_MEANING) -> VersionView:
    """Sign exactly the text in the editor: save it as a new version first when it was changed.

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
    if not can_sign(user.role):
        return approve(store, user, study_uid, expected_version=expected_version, meaning=meaning)
    latest = _current(store, study_uid, expected_version)
    if reviews.content_hash(findings.strip(), impression.strip()) != latest.content_hash:
        latest = save_edit(store, user, study_uid, findings, impression, expected_version=latest.version)
    return approve(store, user, study_uid, expected_version=latest.version, meaning=meaning)


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
    reason = reason.strip()
    if not reason:
        raise ReviewError("give a reason for the rejection")
    latest = _current(store, study_uid, expected_version)
    try:
        info = reviews.reject_version(store, latest.id, actor=user.username, reason=reason)
    except reviews.ReviewError as exc:
        raise ReviewError(str(exc)) from None
    with store.transaction() as session:
        _audit(store, session, user, "study.reject", study_uid,
               details={"version": latest.version, "reason_chars": len(reason)})
    return info


def record_question(store: Store, user: User, study_uid: str, question: str, answer: str,
                    model_version: str) -> int:
    """Store one question and the model's answer with the study (audited by the store)."""
    return reviews.ask_question(store, study_uid, user=user.username, question=question, answer=answer,
                                model_version=model_version)


def audit_login(store: Store, user: User) -> None:
    """Record a successful log-in in the audit log."""
    with store.transaction() as session:
        append_event(session, actor=user.username, action="user.login", object_type="user",
                     object_id=user.username, details={"role": user.role})


def audit_failed_login(store: Store, username: str) -> None:
    """Record a refused log-in (unknown user or wrong password); the password is never stored."""
    name = username.strip()[:128] or "(empty)"
    with store.transaction() as session:
        append_event(session, actor=name, action="user.login", object_type="user", object_id=name,
                     outcome="refused", details={})


# --------------------------------------------------------------------------------------------
# Similar prior cases: signed reports of other studies, ranked by image similarity when a model
# is configured (``similar_cases_by_image``), else by shared findings labels (``similar_cases``).


@dataclass(frozen=True)
class SimilarCase:
    """A signed report of another study, similar to the one being read.

    Attributes:
        label: the other study's short label (``short_id``); no patient identity.
        study_uid: the other study (for links; never shown).
        shared: positive findings labels in common (label ranking), empty for image ranking.
        impression: its signed IMPRESSION.
        score: Jaccard overlap of labels, or cosine similarity of frontal-image embeddings.
        findings: its signed FINDINGS ("" where not loaded).
    """

    label: str
    study_uid: str
    shared: tuple[str, ...]
    impression: str
    score: float
    findings: str = ""


def _positive_labels(text: str) -> set[str]:
    from medvlm.labeler import label_report, labels_as_strings

    labels = labels_as_strings(label_report(text))
    return {k for k, v in labels.items() if v == "positive"}


def similar_cases(session: Session, study_uid: str, text: str, *, k: int = 3, scan: int = 300) -> list[SimilarCase]:
    """Signed reports of other studies most similar to ``text`` by positive CheXpert labels.

    This is the model-free fallback; with a configured model, ``similar_cases_by_image`` ranks by
    image embeddings instead.

    Args:
        session: an open store session.
        study_uid: the study being read (excluded).
        text: its draft text.
        k: how many to return.
        scan: how many recent signed versions to consider.

    Returns:
        Up to ``k`` cases, best (highest Jaccard overlap) first; none when nothing is shared.
    """
    target = _positive_labels(text)
    rows = session.execute(
        select(ReportVersion.study_uid, ReportVersion.findings, ReportVersion.impression, StudyRecord.metadata_json)
        .join(StudyRecord, StudyRecord.study_uid == ReportVersion.study_uid)
        .where(ReportVersion.status == "signed", ReportVersion.study_uid != study_uid)
        .order_by(ReportVersion.id.desc()).limit(scan)
    ).all()
    seen: set[str] = set()
    out: list[SimilarCase] = []
    for r in rows:
        if r.study_uid in seen:
            continue
        seen.add(r.study_uid)
        labels = _positive_labels(f"{r.findings} {r.impression}")
        union = target | labels
        shared = target & labels
        score = len(shared) / len(union) if union else 1.0  # both normal: similar
        if score > 0:
            out.append(SimilarCase(short_id(r.study_uid, r.metadata_json), r.study_uid,
                                   tuple(sorted(shared)) or ("No Finding",), r.impression, score, r.findings))
    return sorted(out, key=lambda c: -c.score)[:k]



_FRONTAL = ("PA", "AP", "FRONTAL")


def frontal_image(images: Sequence[tuple[str, Path]]) -> Path | None:
    """The frontal (PA, else AP) image among a study's ``(view, path)`` images (``study_images``), or None."""
    for view in _FRONTAL:
        for v, path in images:
            if v == view:
                return path
    return None


@dataclass(frozen=True)
class CaseCandidate:
    """A study with a signed report and a recorded frontal image: a candidate similar prior case.

    Attributes:
        study_uid: the study.
        label: its short label (``short_id``).
        findings: the newest signed version's FINDINGS.
        impression: the newest signed version's IMPRESSION.
        frontal: its frontal image file.
    """

    study_uid: str
    label: str
    findings: str
    impression: str
    frontal: Path


def signed_case_candidates(session: Session, *, scan: int = 500) -> list[CaseCandidate]:
    """Every study with a signed report (its newest signed version) and a recorded frontal image.

    The study being read is not excluded here (``similar_cases_by_image`` does that), so one list
    serves every study and the page can cache it.

    Args:
        session: an open store session.
        scan: how many recent signed versions to consider (bounds the embedding work).

    Returns:
        Candidates, most recently signed first.
    """
    rows = session.execute(
        select(ReportVersion.study_uid, ReportVersion.findings, ReportVersion.impression, StudyRecord.source,
               StudyRecord.metadata_json)
        .join(StudyRecord, StudyRecord.study_uid == ReportVersion.study_uid)
        .where(ReportVersion.status == "signed")
        .order_by(ReportVersion.id.desc()).limit(scan)
    ).all()
    seen: set[str] = set()
    out: list[CaseCandidate] = []
    for r in rows:
        if r.study_uid in seen:
            continue
        seen.add(r.study_uid)
        frontal = frontal_image(study_images(r.source, r.metadata_json))
        if frontal is not None:
            out.append(CaseCandidate(r.study_uid, short_id(r.study_uid, r.metadata_json), r.findings or "",
                                     r.impression or "", frontal))
    return out


def _file_key(path: Path) -> str | None:
    """Cache key of an image file: its path, modification time and size (None when it is gone)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{path}|{st.st_mtime_ns}|{st.st_size}"


def frontal_embeddings(bundle: Any, paths: Sequence[Path], *, cache: MutableMapping[str, Any] | None = None,
                       batch_size: int = 16) -> list[Any]:
    """Pooled, unit image embeddings of frontal images through the model's own input path.

    Each file is read as the drafting job reads it (``dicom_io.reader.load_image`` at the model's
    image size), turned into ``pixel_values`` by the bundle's processor (``encode_studies``) and
    pooled by ``medvlm.retrieval.image_embeddings``.

    Args:
        bundle: the model (``load_model``).
        paths: image files.
        cache: file key → embedding, read and filled (the page keeps one per model).
        batch_size: images per tower call.

    Returns:
        One (D,) float32 array per path, or None for a file that cannot be read.
    """
    import numpy as np
    import torch

    from dicom_io.errors import DicomIOError
    from dicom_io.reader import load_image
    from medvlm.generate import StudyInput, encode_studies
    from medvlm.retrieval import image_embeddings

    cache = {} if cache is None else cache
    keys = [_file_key(Path(p)) for p in paths]
    todo: list[tuple[str, Any]] = []  # (key, (3, S, S) pixel values) of files not cached yet
    for key, path in zip(keys, paths, strict=True):
        if key is None or key in cache or any(k == key for k, _ in todo):
            continue
        try:
            pixels, _meta = load_image(path, size=bundle.config.image_size)
        except (DicomIOError, OSError, ValueError):
            continue  # a lost or unreadable file drops out of the ranking; it does not block the others
        (enc,) = encode_studies(bundle, [StudyInput([pixels])])
        todo.append((key, enc["pixel_values"][0]))
    device = next(bundle.llava.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            pv = torch.stack([p for _, p in chunk]).to(device)  # (B, 3, S, S)
            emb = image_embeddings(bundle, pv).cpu().numpy().astype(np.float32)  # (B, D)
            for (key, _), row in zip(chunk, emb, strict=True):
                cache[key] = row
    return [cache.get(k) if k is not None else None for k in keys]


def similar_cases_by_image(bundle: Any, study_uid: str, frontal: Path, candidates: Sequence[CaseCandidate], *,
                           k: int = 3, cache: MutableMapping[str, Any] | None = None) -> list[SimilarCase]:
    """Signed reports of other studies whose frontal image looks most like this study's.

    Image-to-report retrieval (DESIGN.md): cosine similarity of the model's pooled frontal-image
    embeddings, searched exactly with ``medvlm.retrieval.ReportIndex``. Only the other study's
    short label and report text are returned, never patient identity.

    Args:
        bundle: the model (``load_model``).
        study_uid: the study being read (excluded from the results).
        frontal: its frontal image file.
        candidates: studies with signed reports (``signed_case_candidates``).
        k: how many to return.
        cache: file key → embedding (see ``frontal_embeddings``).

    Returns:
        Up to ``k`` cases, most similar first; candidates whose image cannot be read are left out.

    Raises:
        ReviewError: this study's frontal image cannot be read.
    """
    import numpy as np

    from medvlm.retrieval import ReportIndex

    others = [c for c in candidates if c.study_uid != study_uid]
    query, *embs = frontal_embeddings(bundle, [Path(frontal), *(c.frontal for c in others)], cache=cache)
    if query is None:
        raise ReviewError("this study's frontal image cannot be read, so similar cases cannot be searched by image")
    kept = [(c, e) for c, e in zip(others, embs, strict=True) if e is not None]
    if not kept or k < 1:
        return []
    index = ReportIndex(int(query.shape[0]))
    index.add(np.stack([e for _, e in kept]), [f"{c.findings} {c.impression}".strip() for c, _ in kept])
    (hits,) = index.search(query, k=k)
    return [SimilarCase(kept[h.index][0].label, kept[h.index][0].study_uid, (), kept[h.index][0].impression,
                        h.score, kept[h.index][0].findings) for h in hits]


# --------------------------------------------------------------------------------------------
# Model information


@dataclass(frozen=True)
class ModelInfo:
    """What the Model page says about the model that drafted a study.

    Attributes:
        model_version: the version string stored with the draft.
        available: True when MLflow had a record of it.
        message: a plain sentence when not available (why).
        metrics: evaluation figures (name → value).
        tags: registry tags.
        model_card: the model card markdown, if logged.
    """

    model_version: str
    available: bool
    message: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    model_card: str | None = None


_CONTENT_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


def short_model_version(model_version: str | None) -> str:
    """A checkpoint content hash shortened for tables (12 hex digits); other version strings unchanged."""
    value = model_version or ""
    return value[:12] if _CONTENT_HASH_RE.match(value) else value
_VERSION_RE = re.compile(r"^(?:models:/)?(?P<name>[^/@]+)(?:/|@|:v?)(?P<ref>[^/]+)$")


def model_info(model_version: str, *, tracking_uri: str | None = None) -> ModelInfo:
    """Look up a model version in the MLflow registry.

    Never creates a tracking database: when the default SQLite file is absent the answer says so.

    Args:
        model_version: e.g. ``medvlm/3``, ``models:/medvlm@champion`` or a checkpoint path.
        tracking_uri: MLflow URI; default as ``pipelines.tracking.tracker.resolve_tracking_uri``.

    Returns:
        The information found, or ``available=False`` with the reason.
    """
    from pipelines.tracking.tracker import resolve_tracking_uri, sqlite_path

    if not model_version:
        return ModelInfo("", False, "This study has no draft, so no model is recorded for it.")
    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return ModelInfo(model_version, False, "No MLflow tracking store is configured here "
                         "(set MLFLOW_TRACKING_URI); evaluation figures and the model card are unavailable.")
    m = _VERSION_RE.match(model_version)
    by_hash = _CONTENT_HASH_RE.match(model_version) is not None
    if m is None and not by_hash:
        return ModelInfo(model_version, False, "This model version is not a registered MLflow model "
                         "(for example a local checkpoint folder); no evaluation figures are recorded.")
    try:
        from pipelines.tracking.tracker import open_client

        client = open_client(uri)
        if by_hash:
            # the batch job records the checkpoint's content hash; registration tags each version with it
            found = client.search_model_versions(f"tags.content_hash = '{model_version}'")
            if not found:
                return ModelInfo(model_version, False, "No registered model version has this checkpoint's content "
                                 "hash (a checkpoint drafted outside the registry).")
            mv = found[0]
        else:
            ref = m["ref"]
            mv = (client.get_model_version(m["name"], ref) if ref.isdigit()
                  else client.get_model_version_by_alias(m["name"], ref))
        metrics: dict[str, float] = {}
        card = None
        if mv.run_id:
            run = client.get_run(mv.run_id)
            metrics = {k: float(v) for k, v in run.data.metrics.items()}
            try:
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    local = client.download_artifacts(mv.run_id, "model_card.md", tmp)
                    card = Path(local).read_text(encoding="utf-8")
            except Exception:  # noqa: BLE001 - the card is optional
                card = None
        return ModelInfo(model_version, True, "", metrics, dict(mv.tags or {}), card)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types; say plainly it is unavailable
        return ModelInfo(model_version, False, f"MLflow has no record of this model version ({type(exc).__name__}).")


MODEL_ENV = "MEDVLM_MODEL"
"""Environment variable naming the model the Ask page uses: a checkpoint folder or ``models:/...``."""


def configured_model(env: Mapping[str, str] | None = None) -> str | None:
    """The model the dashboard may use for questions (``$MEDVLM_MODEL``), or None."""
    import os

    value = (os.environ if env is None else env).get(MODEL_ENV, "").strip()
    return value or None


def load_model(model: str) -> Any:
    """Load a model bundle from a checkpoint folder or an MLflow ``models:/`` URI.

    Raises:
        pipelines.tracking.registry.RegistryError: the URI or folder does not resolve.
    """
    from medvlm.checkpoint import load_checkpoint
    from pipelines.tracking.registry import resolve_model_uri

    return load_checkpoint(resolve_model_uri(model))


def model_images(detail: StudyDetail, size: int | None = None) -> list[Any]:
    """The study's views as model input: float32 [0, 1] (H, W) arrays, frontal first."""
    from dicom_io.reader import load_image

    return [load_image(path, size=size)[0] for _view, path in detail.images]


@dataclass
class StreamedAnswer:
    """What ``stream_model_answer`` leaves behind once the page has shown the stream.

    Attributes:
        pieces: the answer's text pieces as streamed (raw model text, not escaped).
        confidence: exp(mean token log-probability) of the same generation, set after the last
            piece; None while streaming or when the stream stopped early.
    """

    pieces: list[str] = field(default_factory=list)
    confidence: float | None = None

    @property
    def text(self) -> str:
        """The whole answer: the streamed pieces joined (what is stored with the study)."""
        return "".join(self.pieces)


def stream_model_answer(bundle: Any, images: Sequence[Any], question: str, history: Sequence[QAView],
                        result: StreamedAnswer) -> Iterator[str]:
    """Stream the model's answer to a question about the open study (for ``st.write_stream``).

    Decoding is greedy (``medvlm.generate.stream_answer``); earlier Q&A of the study is the history,
    and a study with more views than the model reads gives it its first ``max_views`` (frontal first).

    Args:
        bundle: the model (``load_model``).
        images: the study's views (``model_images``), frontal first.
        question: the user's question.
        history: the study's stored Q&A, oldest first.
        result: filled as the stream is consumed: each piece, then the confidence.

    Yields:
        Raw text pieces (escape them before showing them as markdown).
    """
    from medvlm.generate import stream_answer

    def _done(answer: Any) -> None:
        result.confidence = float(answer.confidence)

    views = list(images)[: bundle.config.max_views]
    for piece in stream_answer(bundle, views, question, [(q.question, q.answer) for q in history],
                               on_answer=_done):
        result.pieces.append(piece)
        yield piece


# --------------------------------------------------------------------------------------------
# Seeding (demo and tests)


def seed_study(store: Store, *, study_uid: str, source: str, metadata: Mapping[str, Any], findings: str,
               impression: str, sentences: Iterable[Mapping[str, Any]], flags: Mapping[str, Any] | None = None,
               model_version: str = "demo", priority: int = 0, prompt_hash: str = "0" * 64) -> int:
    """Record a study, queue, claim and complete its drafting job with the given draft.

    What the batch drafting job leaves behind, through the store's own job functions; for the
    demo and tests.

    Returns:
        The draft id.
    """
    from pipelines.store import jobs

    jobs.add_study(store, study_uid, source=source, priority=priority, metadata=dict(metadata))
    job_id = jobs.enqueue(store, study_uid, model_version, prompt_hash, source=source, priority=priority)
    worker = "seed"
    job = jobs.claim(store, worker, 60.0)
    while job is not None and job.id != job_id:  # other queued jobs: leave them leased to "seed"
        job = jobs.claim(store, worker, 60.0)
    if job is None:
        raise ReviewError("the seeded job could not be claimed")
    return jobs.complete(store, job_id, worker, jobs.DraftPayload(
        findings=findings, impression=impression, sentences=[dict(s) for s in sentences], flags=dict(flags or {})))
