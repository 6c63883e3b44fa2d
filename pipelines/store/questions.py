"""Questions asked about a study (with the model's answers) and readers' feedback on its draft.

Each write appends its audit event in the same transaction; the audit event names the study by its
pseudonym and never holds the question or feedback text.
"""

from __future__ import annotations

from sqlalchemy import select

from compliance.audit import append_event
from compliance.clock import utcnow
from pipelines.store.db import Store
from pipelines.store.models import Feedback, Question


def ask_question(store: Store, study_uid: str, *, user: str, question: str, answer: str, model_version: str) -> int:
    """Store a question about a study and the model's answer; returns the question id."""
    with store.transaction() as session:
        row = Question(study_uid=study_uid, user=user, question=question, answer=answer,
                       model_version=model_version, created_at=utcnow())
        session.add(row)
        session.flush()
        append_event(session, actor=user, action="question.ask", object_type="study",
                     object_id=store.pseudonym(study_uid),
                     details={"question_id": row.id, "model_version": model_version})
        return int(row.id)


def add_feedback(store: Store, study_uid: str, *, user: str, kind: str, text: str) -> int:
    """Store a reader's feedback on a study's draft; returns the feedback id."""
    with store.transaction() as session:
        row = Feedback(study_uid=study_uid, user=user, kind=kind, text=text, created_at=utcnow())
        session.add(row)
        session.flush()
        append_event(session, actor=user, action="feedback.add", object_type="study",
                     object_id=store.pseudonym(study_uid), details={"feedback_id": row.id, "kind": kind})
        return int(row.id)


def list_questions(store: Store, study_uid: str) -> list[tuple[str, str, str]]:
    """Return ``(user, question, answer)`` for a study, oldest first."""
    with store.transaction() as session:
        rows = session.scalars(select(Question).where(Question.study_uid == study_uid).order_by(Question.id))
        return [(r.user, r.question, r.answer) for r in rows]
