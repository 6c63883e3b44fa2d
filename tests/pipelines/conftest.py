"""Fixtures shared by the tests of ``pipelines``: an isolated var/ and a real MLflow SQLite store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite file with the schema created once per session (migrations take seconds)."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.search_experiments()
    client.search_registered_models()
    return db


@pytest.fixture
def var_dir(tmp_path, monkeypatch) -> Path:
    """An isolated var/ (MLflow SQLite store + artifacts) under tmp_path; cwd moved there too.

    Tests that use MLflow request ``mlflow_var_dir`` instead: it holds a copy of ``empty_mlflow_db``.
    """
    var = tmp_path / "var"
    var.mkdir()
    monkeypatch.setenv("MEDVLM_VAR_DIR", str(var))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # anything that still fell back to ./ would land in tmp_path
    return var


@pytest.fixture
def mlflow_var_dir(var_dir, empty_mlflow_db) -> Path:
    """``var_dir`` holding a fresh copy of the empty MLflow store."""
    shutil.copyfile(empty_mlflow_db, var_dir / "mlflow.db")
    return var_dir
