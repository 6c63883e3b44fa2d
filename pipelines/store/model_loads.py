"""Loads of a model that runs its own code (``--trust-remote-code``), recorded in the audit log."""

from __future__ import annotations

from collections.abc import Mapping

from compliance.audit import append_event
from pipelines.store.db import Store

TRUSTED_REMOTE_CODE = "model.load_remote_code"
"""Audit action: a model whose own code was allowed ran in this process."""


def record_remote_code_load(store: Store, actor: str, *, model_version: str, family: str,
                            remote_code: Mapping[str, str]) -> None:
    """Record that `actor` loaded a model with trusted remote code, naming each file's sha256.

    Args:
        store: the review store.
        actor: the worker id or the dashboard process.
        model_version: the model folder's fingerprint (`medvlm.loading.model_fingerprint`).
        family: the family the model is run as.
        remote_code: file -> sha256 of the code that ran.
    """
    with store.transaction() as session:
        append_event(session, actor=actor, action=TRUSTED_REMOTE_CODE, object_type="model",
                     object_id=model_version[:64], model_hash=model_version,
                     details={"family": family, "remote_code": dict(sorted(remote_code.items()))})
