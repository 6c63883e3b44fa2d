"""The server's signing key and the keyed MACs (HMAC-SHA256) that make rows unforgeable without it.

The key comes from the environment (``$MEDVLM_SIGNING_KEY``), never from the database: someone who
holds only the database file can rewrite rows, but cannot compute the MAC of the rewritten row,
so ``verify_chain`` (audit events and head) and the store's sign-off check detect the rewrite.

A store passes its key to the audit code through ``Session.info[KEY_INFO]`` (the session factory
carries it), so every ``append_event`` call signs without threading a key through each caller.
A session without that entry falls back to the environment.

Each MAC is domain-separated (``medvlm.<kind>.v1``), so a MAC of one kind of row never verifies
as another kind.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

from compliance.audit.schema import AuditError

SIGNING_KEY_ENV = "MEDVLM_SIGNING_KEY"
KEY_INFO = "medvlm.signing_key"
MIN_KEY_CHARS = 32  # 128 bits as hex; a shorter secret is guessable offline from a stolen file


class SigningKeyMissingError(AuditError):
    """No signing key is configured (or it is too short), so nothing can be signed or verified."""

    def __init__(self, detail: str = "is not set") -> None:
        super().__init__(
            f"${SIGNING_KEY_ENV} {detail}: set it to a secret of at least {MIN_KEY_CHARS} characters "
            f"(e.g. `export {SIGNING_KEY_ENV}=$(openssl rand -hex 32)`), the same for every process "
            "that uses this database, and keep it outside the database"
        )


def load_signing_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """Return the signing key from ``$MEDVLM_SIGNING_KEY``, or None when it is not set.

    Raises:
        SigningKeyMissingError: the variable is set but shorter than ``MIN_KEY_CHARS``.
    """
    value = (os.environ if environ is None else environ).get(SIGNING_KEY_ENV)
    if not value:
        return None
    return check_key(value)


def check_key(key: bytes | str) -> bytes:
    """Return ``key`` as bytes after checking its length.

    Raises:
        SigningKeyMissingError: shorter than ``MIN_KEY_CHARS``.
    """
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if len(raw) < MIN_KEY_CHARS:
        raise SigningKeyMissingError(f"is too short ({len(raw)} characters)")
    return raw


def session_key(info: Mapping[str, object]) -> bytes | None:
    """The key a session carries (``info[KEY_INFO]``), else the environment's; None when neither has one."""
    if KEY_INFO in info:
        key = info[KEY_INFO]
        return None if key is None else check_key(key)  # type: ignore[arg-type]
    return load_signing_key()


def require_key(key: bytes | None) -> bytes:
    """Return ``key``, or raise ``SigningKeyMissingError`` when it is None."""
    if key is None:
        raise SigningKeyMissingError()
    return key


def keyed_mac(key: bytes, kind: str, payload: bytes) -> str:
    """HMAC-SHA256 hex of ``payload`` under ``key``, separated by ``kind`` (``audit.entry``, ``signoff``...)."""
    return hmac.new(key, f"medvlm.{kind}.v1\0".encode() + payload, hashlib.sha256).hexdigest()


def entry_mac(key: bytes, entry_hash: str) -> str:
    """The MAC of one audit event (its ``entry_hash`` already covers every field and the link)."""
    return keyed_mac(key, "audit.entry", entry_hash.encode())


def head_mac(key: bytes, event_count: int, last_hash: str) -> str:
    """The MAC of the head row's (event count, last hash)."""
    return keyed_mac(key, "audit.head", f"{int(event_count)}\0{last_hash}".encode())


def macs_equal(expected: str, found: str | None) -> bool:
    """Constant-time comparison; a missing MAC never matches."""
    return found is not None and hmac.compare_digest(expected, found)
