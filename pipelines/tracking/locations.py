"""Where tracking data lives: the var folder and the MLflow tracking URI (no mlflow import here).

Embedded default (nothing to run): an MLflow SQLite store at ``{var_dir}/mlflow.db`` with artifacts
under ``{var_dir}/mlartifacts``, where ``var_dir`` is ``$MEDVLM_VAR_DIR`` or ``./var``.
``$MLFLOW_TRACKING_URI`` (or an explicit ``tracking_uri``) points at a shared ``mlflow server`` instead.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_var_dir() -> Path:
    """``$MEDVLM_VAR_DIR`` or ``./var``, made absolute (not created)."""
    return Path(os.environ.get("MEDVLM_VAR_DIR") or "var").resolve()


def resolve_tracking_uri(tracking_uri: str | None = None, var_dir: str | Path | None = None) -> str:
    """The tracking URI to use: explicit > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///{var_dir}/mlflow.db``."""
    if tracking_uri:
        return tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    var = Path(var_dir).resolve() if var_dir is not None else default_var_dir()
    return f"sqlite:///{var / 'mlflow.db'}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other kind of store."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix) :]) if tracking_uri.startswith(prefix) else None


def artifact_location_for(tracking_uri: str) -> str | None:
    """Artifact root for new experiments: ``<db dir>/mlartifacts`` for SQLite, else the server's choice."""
    db = sqlite_path(tracking_uri)
    return (db.parent / "mlartifacts").resolve().as_uri() if db is not None else None
