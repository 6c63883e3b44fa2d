"""Everything the dashboard does that is not drawing, as plain functions tested without Streamlit.

Streamlit files (``dashboard/app.py``, ``dashboard/ui/*``) only render what these functions return
(STYLE rule 21) and call them as ``logic.X``; each name is defined in the module named after its
concern and re-exported here:

- ``session``: the browser session's state (``DashboardSession``, ``init_session``), log-in with
  throttling and lockout (``attempt_login``), session rotation and idle timeout, admin unlock.
- ``errors``: an unexpected error becomes an error id for the page and a PHI-free log line.
- ``text``: escaping untrusted text for markdown, sentence and flag views, word diffs.
- ``worklist``: the worklist table and counts.
- ``study``: one study's detail and images, and the review actions (open, edit, approve, reject),
  each one call into ``pipelines.store.reviews``, which checks and writes it in one transaction.
- ``similar``: similar prior cases by shared labels or by image embeddings.
- ``model``: model information (MLflow), the configured model, streamed answers.

Queries and writes all go through ``pipelines.store``; nothing here opens a database session.
"""

from dashboard.auth import can_sign
from dashboard.logic.errors import error_message, report_error
from dashboard.logic.model import (
    MODEL_ENV,
    ModelInfo,
    StreamedAnswer,
    configured_model,
    load_model,
    model_images,
    model_info,
    short_model_version,
    stream_model_answer,
)
from dashboard.logic.session import (
    BAD_CREDENTIALS,
    PAGES,
    SESSION_KEY,
    DashboardSession,
    LoginResult,
    attempt_login,
    end_session,
    init_session,
    start_session,
    touch,
    unlock_user,
)
from dashboard.logic.similar import (
    CaseCandidate,
    SimilarCase,
    frontal_embeddings,
    signed_case_candidates,
    similar_cases,
    similar_cases_by_image,
)
from dashboard.logic.study import (
    SIGN_MEANING,
    DraftView,
    PermissionDenied,
    QAView,
    ReviewError,
    SignoffView,
    StudyDetail,
    VersionView,
    approve,
    approve_text,
    audit_failed_login,
    audit_login,
    frontal_image,
    load_study,
    open_study,
    record_question,
    reject,
    save_edit,
    seed_study,
    study_images,
)
from dashboard.logic.text import (
    LOW_CONFIDENCE,
    FlagView,
    SentenceView,
    diff_markdown,
    escape_markdown,
    parse_flags,
    parse_sentences,
    section_markdown,
    sentence_markdown,
    short_id,
    version_diff,
)
from dashboard.logic.worklist import (
    FLAGGED_CHOICES,
    REVIEW_STATES,
    SORT_COLUMNS,
    STUDY_STATUSES,
    WORKLIST_LIMIT,
    WorklistFilters,
    load_worklist,
    worklist_counts,
)

__all__ = [
    "BAD_CREDENTIALS", "LoginResult", "attempt_login", "end_session", "error_message", "report_error",
    "start_session", "touch", "unlock_user",
    "FLAGGED_CHOICES", "LOW_CONFIDENCE", "MODEL_ENV", "PAGES", "REVIEW_STATES", "SESSION_KEY", "SIGN_MEANING", "SORT_COLUMNS",
    "STUDY_STATUSES", "WORKLIST_LIMIT", "CaseCandidate", "DashboardSession", "DraftView", "FlagView", "ModelInfo",
    "PermissionDenied", "QAView", "ReviewError", "SentenceView", "SignoffView", "SimilarCase", "StreamedAnswer",
    "StudyDetail", "VersionView", "WorklistFilters", "approve", "approve_text", "audit_failed_login", "audit_login",
    "can_sign", "configured_model", "diff_markdown", "escape_markdown", "frontal_embeddings", "frontal_image",
    "init_session", "load_model", "load_study", "load_worklist", "model_images", "model_info", "open_study",
    "parse_flags", "parse_sentences", "record_question", "reject", "save_edit", "section_markdown", "seed_study",
    "sentence_markdown", "short_id", "short_model_version", "signed_case_candidates", "similar_cases",
    "similar_cases_by_image", "stream_model_answer", "study_images", "version_diff", "worklist_counts",
]
