"""Fixtures shared by every test: deterministic seeds, default dtype, real shared data, Orthanc, stores."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import _orthanc
import numpy as np
import pytest
from _postgres import start_cluster_or_skip_reason

REPO_ROOT = Path(__file__).resolve().parents[1]
# The review store signs sign-offs and audit events with this key (never stored in the database);
# set for the whole session so subprocesses (CLI, Streamlit, workers) inherit it.
TEST_SIGNING_KEY = "medvlm-tests-only-signing-key-not-a-secret"
os.environ.setdefault("MEDVLM_SIGNING_KEY", TEST_SIGNING_KEY)


@pytest.fixture(autouse=True)
def _reset_global_state():
    """Reset seeds and torch's default dtype, and end any MLflow run a test left open."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - only to neutralise third-party code that uses it
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None:
        torch.manual_seed(0)
        dtype = torch.get_default_dtype()
    yield
    if torch is not None:
        torch.set_default_dtype(dtype)
    import sys

    if "mlflow" in sys.modules:  # only if a test imported it; importing mlflow costs seconds
        mlflow = sys.modules["mlflow"]
        while mlflow.active_run() is not None:
            mlflow.end_run()


def shared_data_dir() -> Path | None:
    """`../shared/data` beside the checkout, or `$MEDVLM_SHARED_DATA`; None when absent."""
    env = os.environ.get("MEDVLM_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO_ROOT.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture
def shared_data() -> Path:
    """The shared real data folder; skips the test with a reason when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared data absent: set MEDVLM_SHARED_DATA or place ../shared/data beside the checkout")
    return path


@pytest.fixture
def pydicom_data_file():
    """Return a function that finds a `pydicom`/`pydicom-data` test file by name, or skips."""

    def _get(name: str) -> Path:
        from pydicom.data import get_testdata_file

        try:
            found = get_testdata_file(name)
        except Exception as exc:  # pydicom-data raises on a missing download cache
            pytest.skip(f"pydicom test file {name} unavailable: {type(exc).__name__}")
        if not found:
            pytest.skip(f"pydicom test file {name} absent: install pydicom-data")
        return Path(found)

    return _get


@pytest.fixture
def ctbrain() -> Path:
    """`deid-data`'s real CT head file ``humans/ctbrain1.dcm`` (full of PHI-like values); skips when absent."""
    try:
        import deid_data
    except ImportError:
        pytest.skip("deid-data not installed")
    path = Path(deid_data.__path__[0]) / "data" / "humans" / "ctbrain1.dcm"
    if not path.is_file():
        pytest.skip(f"{path} absent from deid-data")
    return path


# --- a real PACS (Orthanc), one per session ---


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_orthanc.OrthancServer]:
    """One Orthanc for the whole session; skips when the Debian packages are absent."""
    reason = _orthanc.missing_reason()
    if reason:
        pytest.skip(reason)
    server = _orthanc.start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def empty_orthanc(orthanc: _orthanc.OrthancServer) -> _orthanc.OrthancServer:
    """The session's Orthanc, emptied before the test."""
    orthanc.clear()
    return orthanc


# --- review store on both backends (SQLite file, throwaway PostgreSQL cluster) ---

@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL cluster for the whole session; skips with a reason when it cannot run."""
    cluster, reason = start_cluster_or_skip_reason()
    if cluster is None:
        pytest.skip(reason)
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request, tmp_path):
    """URL of an empty database: a SQLite file, or a fresh database in the PostgreSQL cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_cluster").create_database()


@pytest.fixture
def store(store_url):
    """An open, migrated store on each backend."""
    from pipelines.store import open_store

    s = open_store(store_url, audit_key=b"test-key")
    yield s
    s.close()
