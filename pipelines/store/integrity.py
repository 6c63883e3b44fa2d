"""Is the store's record intact? The whole check (``medvlm audit verify``) and the cheap alarm (dashboard).

``check_integrity`` walks the audit chain (hashes, MACs, links, head) and every signed version's
keyed signature, and names the first thing that breaks. ``audit_alarm`` is what an admin sees on
the dashboard: the head out of step with the table right now, or alarms recorded by appends that
found it so, in one sentence without PHI; it reads two rows and the alarm events, never the
whole chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from compliance.audit import (
    ALARM_ACTION,
    GENESIS_HASH,
    HEAD_ROW_ID,
    audit_events,
    audit_head,
    find_events,
    require_key,
    verify_chain,
)
from compliance.audit.chain import head_problem
from pipelines.store.db import Store
from pipelines.store.signatures import first_bad_signoff


@dataclass(frozen=True)
class IntegrityReport:
    """What ``check_integrity`` found.

    Attributes:
        ok: True when the chain and every sign-off verify.
        events_checked: audit events verified before the first break (all of them when ok).
        head_hash: the head row's last hash (for anchoring outside the database).
        broken: where it first breaks, e.g. ``audit event 7`` or ``sign-off of report version 3``.
        reason: a sentence saying what broke; None when ok.
    """

    ok: bool
    events_checked: int
    head_hash: str
    broken: str | None = None
    reason: str | None = None


def check_integrity(store: Store) -> IntegrityReport:
    """Verify the audit chain, then every sign-off; report the first break, never raise on one.

    Raises:
        SigningKeyMissingError: ``$MEDVLM_SIGNING_KEY`` is not set (nothing can be verified).
    """
    key = require_key(store.signing_key)
    with store.transaction() as session:
        chain = verify_chain(session, key)
    if not chain.ok:
        return IntegrityReport(False, chain.checked, chain.head_hash, f"audit event {chain.broken_at}", chain.reason)
    bad = first_bad_signoff(store, key)
    if bad is not None:
        return IntegrityReport(False, chain.checked, chain.head_hash, f"sign-off of report version {bad[0]}", bad[1])
    return IntegrityReport(True, chain.checked, chain.head_hash)


def audit_alarm(store: Store) -> str | None:
    """One sentence for admins when the audit log needs attention; None when nothing is wrong.

    Cheap: the head row, the last event and the recorded ``audit.alarm`` events (not the chain).
    """
    with store.transaction() as session:
        head = session.execute(select(audit_head).where(audit_head.c.id == HEAD_ROW_ID)).one()
        tail = session.execute(select(audit_events.c.seq, audit_events.c.entry_hash)
                               .order_by(audit_events.c.seq.desc()).limit(1)).one_or_none()
        now = head_problem(head, int(tail.seq) if tail else 0, str(tail.entry_hash) if tail else GENESIS_HASH,
                           store.signing_key)
        alarms = find_events(session, action=ALARM_ACTION)
    if now is None and not alarms:
        return None
    parts = [f"the audit log is out of step now ({now})"] if now else []
    if alarms:
        last = alarms[-1]
        parts.append(f"{len(alarms)} alarm(s) recorded, the latest at event {last.seq} "
                     f"({last.timestamp:%Y-%m-%d %H:%M} UTC): {last.details.get('problem', 'head out of step')}")
    return "Audit log alarm: " + "; ".join(parts) + ". Run `medvlm audit verify` and investigate."
