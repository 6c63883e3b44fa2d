"""Keyed signatures of sign-offs: what a radiologist signed cannot be rewritten without the server key.

A sign-off's ``signature`` is HMAC-SHA256, under ``$MEDVLM_SIGNING_KEY`` (never in the database),
of the canonical JSON of the signed version's study, version number, findings and impression and
the sign-off's signer, role, meaning and time. The content hash alone (``bound_hash``) can be
recomputed by anyone who holds the database file; the signature cannot. A version whose stored
text, sign-off or signature no longer agree is reported here, refused by ``medvlm export`` and
named by ``medvlm audit verify``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from compliance.audit import keyed_mac, macs_equal
from compliance.clock import as_utc
from pipelines.store.db import Store
from pipelines.store.models import ReportVersion, Signoff


def content_hash(findings: str, impression: str) -> str:
    """Return sha256 hex of the canonical JSON ``{"findings": ..., "impression": ...}``."""
    canonical = json.dumps({"findings": findings, "impression": impression}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def signoff_signature(key: bytes, *, study_uid: str, version: int, findings: str, impression: str, signer: str,
                      role: str, meaning: str, signed_at: datetime) -> str:
    """The keyed signature (64 hex digits) of one sign-off of one version's content."""
    fields = {
        "study_uid": study_uid, "version": int(version), "findings": findings, "impression": impression,
        "signer": signer, "role": role, "meaning": meaning,
        "signed_at": as_utc(signed_at).isoformat(timespec="microseconds"),
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return keyed_mac(key, "signoff", canonical.encode())


def signature_of(key: bytes, row: ReportVersion, sig: Signoff) -> str:
    """``signoff_signature`` of a version row and its sign-off row as they are stored."""
    return signoff_signature(key, study_uid=row.study_uid, version=row.version, findings=row.findings,
                             impression=row.impression, signer=sig.signer, role=sig.role, meaning=sig.meaning,
                             signed_at=sig.signed_at)


def signoff_problem(key: bytes, row: ReportVersion | None, sig: Signoff | None, content_hash: str | None) -> str | None:
    """Why a signed version does not verify (None when it does).

    Args:
        key: the signing key.
        row: the version row.
        sig: its sign-off row.
        content_hash: the hash of the row's text as recomputed now.
    """
    if row is None or sig is None:
        return "no sign-off"
    if not (content_hash == sig.bound_hash == row.content_hash):
        return "its text no longer matches the hash it was signed with"
    if sig.signature is None:
        return "its sign-off carries no signature (signed before keyed signatures, or inserted by hand)"
    if not macs_equal(signature_of(key, row, sig), sig.signature):
        return "its signature does not verify under the signing key (rewritten without the key)"
    return None


def signed_pairs(session: Session) -> list[tuple[ReportVersion, Signoff | None]]:
    """Every version marked signed or carrying a sign-off, with its sign-off (None if it lost it), by id."""
    stmt = (select(ReportVersion, Signoff).outerjoin(Signoff, Signoff.version_id == ReportVersion.id)
            .where(or_(ReportVersion.status == "signed", Signoff.id.is_not(None))).order_by(ReportVersion.id))
    return [(v, s) for v, s in session.execute(stmt).all()]


def first_bad_signoff(store: Store, key: bytes) -> tuple[int, str] | None:
    """The first signed version (by id) whose sign-off does not verify, as (version id, reason); None if all do.

    Args:
        store: the open store.
        key: the signing key.
    """
    with store.transaction() as session:
        for row, sig in signed_pairs(session):
            problem = signoff_problem(key, row, sig, content_hash(row.findings, row.impression))
            if problem is not None:
                return row.id, problem
    return None
