"""Tracking: the PHI guard, provenance, a real MLflow run on SQLite in tmp_path, the model card."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from pipelines.errors import PipelineError
from pipelines.evaluation.metrics import evaluate_reports
from pipelines.tracking import tracker as tracker_module
from pipelines.tracking.locations import resolve_tracking_uri
from pipelines.tracking.model_card import PHANTOM_BANNER, render_model_card
from pipelines.tracking.phi_guard import PHIInTrackingError, scrub_for_tracking
from pipelines.tracking.provenance import data_manifest_hash, flatten_config, git_info
from pipelines.tracking.tracker import (
    MlflowTracker,
    NullTracker,
    Tracker,
    TrackingError,
    log_evaluation,
    log_model_card,
)

PHI_STRINGS = ["DOE^JOHN", "ROE^RICHARD^Q", "MRN-99887766", "19450317", "ACC-55501234"]


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    lr: float = 1e-3
    lora_targets: tuple = (".*language_model.*q_proj",)
    data: dict = dataclasses.field(
        default_factory=lambda: {"root": "phantoms", "n": 8, "keep_patient_id": False}
    )


# --- no MLflow needed ------------------------------------------------------------------------------


def test_resolve_tracking_uri_default_env_and_explicit(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MEDVLM_VAR_DIR", str(tmp_path / "v"))
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'v' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri() == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"


def test_scrub_refuses_phi_keys_and_person_names_without_echoing_them():
    with pytest.raises(PHIInTrackingError, match=r"data\.patient_name") as info:
        scrub_for_tracking({"data": {"patient_name": "DOE^JOHN"}})
    assert "DOE" not in str(info.value)
    with pytest.raises(PHIInTrackingError, match=r"notes\[1\]"):
        scrub_for_tracking({"notes": ["fine", "seen by ROE^RICHARD^Q"]})
    for key in ("PatientID", "patient-birth-date", "AccessionNumber", "mrn", "date_of_birth"):
        with pytest.raises(PHIInTrackingError):
            scrub_for_tracking({key: "x"})
    clean = {
        "lr": 0.1,
        "keep_patient_id": False,
        "target": r".*language_model.*\.(q_proj|v_proj)",
        "t": (1, 2),
    }
    assert scrub_for_tracking(clean) == {**clean, "t": [1, 2]}


def test_data_manifest_hash_is_order_insensitive_and_content_based(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one")
    b.write_text("two")
    records = [{"uid": "1", "findings": "x"}, {"uid": "2", "findings": "y"}]
    h = data_manifest_hash(records)
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert data_manifest_hash(list(reversed(records))) == h
    assert data_manifest_hash([{"findings": "x", "uid": "1"}, records[1]]) == h  # key order ignored
    assert data_manifest_hash([records[0]]) != h
    files = data_manifest_hash([a, b])
    assert data_manifest_hash([str(b), a]) == files
    b.write_text("changed")
    assert data_manifest_hash([a, b]) != files
    assert data_manifest_hash([tmp_path]) != data_manifest_hash([a, b])  # folders hash relative names too
    with pytest.raises(FileNotFoundError):
        data_manifest_hash([tmp_path / "missing.txt"])


def test_git_info_inside_and_outside_a_checkout(tmp_path):
    assert git_info(tmp_path) == {"git_commit": "unknown", "git_dirty": "unknown"}
    info = git_info()  # this checkout (or unknown when tests run from an export)
    assert info["git_commit"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", info["git_commit"])
    assert info["git_dirty"] in ("true", "false", "unknown")


def test_flatten_config():
    flat = flatten_config({"a": {"b": 1, "c": {"d": "x"}}, "l": [1, 2], "long": "y" * 7000})
    assert flat["a.b"] == "1" and flat["a.c.d"] == "x" and flat["l"] == "[1, 2]"
    assert len(flat["long"]) == 6000 and flat["long"].endswith("...")


def test_null_tracker_checks_phi_and_is_a_tracker():
    tracker = NullTracker()
    assert isinstance(tracker, Tracker)
    with tracker.start_run("x", {"lr": 1}) as t:
        t.log_metrics({"loss": 1.0}, step=1)
    with pytest.raises(PHIInTrackingError):
        NullTracker().start_run("x", {"patient_id": "MRN-1"})


def test_mlflow_tracker_is_a_tracker_without_touching_mlflow(tmp_path):
    """The Protocol the training loop is typed with; the adapter refuses to log outside a run."""
    tracker = MlflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert isinstance(tracker, Tracker) and tracker.run_id is None
    with pytest.raises(TrackingError):
        tracker.log_metrics({"loss": 1.0})


def test_tracking_errors_are_pipeline_errors():
    assert issubclass(TrackingError, PipelineError) and issubclass(TrackingError, RuntimeError)
    assert issubclass(PHIInTrackingError, PipelineError) and issubclass(PHIInTrackingError, ValueError)


def test_tracker_module_still_exports_the_split_out_names():
    """Callers import these from ``pipelines.tracking.tracker``; they now live in sibling modules."""
    for name in ("resolve_tracking_uri", "sqlite_path", "default_var_dir", "scrub_for_tracking",
                 "PHIInTrackingError", "data_manifest_hash", "git_info", "flatten_config", "open_client"):
        assert hasattr(tracker_module, name), name


def test_model_card_phantom_banner_and_tables():
    result = evaluate_reports(
        ["heart enlarged"], ["heart enlarged"], [{"Cardiomegaly": "positive"}], [{"Cardiomegaly": "positive"}]
    )
    card = render_model_card(
        {"model_name": "medvlm", "model_version": "3", "run_id": "abc", "git_commit": "f" * 40},
        result.summary,
        {"hash": "d" * 64, "source": "phantoms", "counts": {"train": 40, "val": 8}},
        "Draft chest radiograph reports for radiologist review.",
        ["Trained on 48 synthetic studies."],
        per_finding=result.per_finding,
    )
    assert PHANTOM_BANNER in card and "NOT FOR CLINICAL USE" in card
    assert "| clinical_macro_f1 | 1.0000 |" in card
    assert "| Cardiomegaly | 1 | 1.000 | 1.000 | 1.000 |" in card
    assert "train: 40, val: 8" in card and "d" * 64 in card and "- Trained on 48 synthetic studies." in card
    assert "$" not in card  # every placeholder filled
    real = render_model_card({}, {}, {"source": "iu_reports"}, "Research.", [])
    assert "NOT FOR CLINICAL USE" not in real and "Research use only" in real


# --- real MLflow on SQLite -------------------------------------------------------------------------


def _read_artifact(run, name: str) -> str:
    root = Path(run.info.artifact_uri.removeprefix("file://"))
    return (root / name).read_text(encoding="utf-8")


def test_mlflow_run_logs_config_metrics_artifacts_and_ends(mlflow_var_dir, tmp_path):
    import mlflow

    extra = tmp_path / "notes.txt"
    extra.write_text("loss curve attached")
    records = [{"uid": "1", "findings": "Heart enlarged."}]
    data_hash = data_manifest_hash(records)
    result = evaluate_reports(
        ["heart enlarged"], ["heart enlarged"], [{"Cardiomegaly": "positive"}], [{"Cardiomegaly": "positive"}]
    )
    tracker = MlflowTracker(experiment="unit")
    with tracker.start_run("tiny", TinyConfig(), data_hash=data_hash) as t:
        run_id = t.run_id
        for step, loss in enumerate([2.0, 1.5, 1.0]):
            t.log_metrics({"loss": loss}, step=step)
        t.log_artifact(extra)
        log_evaluation(t, result)
        log_model_card(
            t, render_model_card({"run_id": run_id}, result.summary, {"hash": data_hash}, "Test.", [])
        )
        t.set_tags({"stage": "unit"})
    assert tracker.run_id is None and mlflow.active_run() is None

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(), registry_uri=resolve_tracking_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.001" and run.data.params["data.n"] == "8"
    assert run.data.params["lora_targets"] == '[".*language_model.*q_proj"]'
    assert run.data.tags["data_manifest_hash"] == data_hash and run.data.tags["stage"] == "unit"
    assert run.data.tags["git_dirty"] in ("true", "false", "unknown") and run.data.tags["git_commit"]
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [2.0, 1.5, 1.0]
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2]
    assert run.data.metrics["clinical_macro_f1"] == 1.0
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "notes.txt", "evaluation.json", "evaluation.md", "model_card.md"} <= names
    assert json.loads(_read_artifact(run, "config.json"))["data"] == {
        "root": "phantoms",
        "n": 8,
        "keep_patient_id": False,
    }
    assert "| Cardiomegaly | 1 |" in _read_artifact(run, "evaluation.md")
    # The store and artifacts live in the isolated var/, as the embedded default says.
    assert (mlflow_var_dir / "mlflow.db").is_file()
    assert run.info.artifact_uri.startswith((mlflow_var_dir / "mlartifacts").resolve().as_uri())

    with pytest.raises(TrackingError):
        tracker.log_metrics({"loss": 0.5})


def test_mlflow_run_ends_failed_on_exception(mlflow_var_dir):
    import mlflow

    tracker = MlflowTracker(experiment="unit")
    with pytest.raises(RuntimeError, match="boom"), tracker.start_run("fails", {"lr": 1}) as t:
        run_id = t.run_id
        raise RuntimeError("boom")
    assert tracker.run_id is None and mlflow.active_run() is None
    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri())
    assert client.get_run(run_id).info.status == "FAILED"


def test_no_phi_reaches_the_mlflow_store(mlflow_var_dir, tmp_path):
    """Seed PHI into configs, records, dicts, texts and files; grep every byte of the store for it."""
    records = [
        {
            "uid": "1",
            "patient_name": "DOE^JOHN",
            "patient_id": "MRN-99887766",
            "birth_date": "19450317",
            "accession": "ACC-55501234",
            "findings": "Heart enlarged.",
        },
        {"uid": "2", "patient_name": "ROE^RICHARD^Q", "findings": "Lungs clear."},
    ]
    tracker = MlflowTracker(experiment="phi")
    # 1. A config carrying PHI is refused before anything is written.
    for bad in (
        {"lr": 1, "patient_name": "DOE^JOHN"},
        {"data": {"note": "ROE^RICHARD^Q"}},
        {"records": records},
        {"accession": "ACC-55501234"},
    ):
        with pytest.raises(PHIInTrackingError) as info:
            tracker.start_run("refused", bad)
        assert not any(s in str(info.value) for s in PHI_STRINGS)
        assert tracker.run_id is None
    # 2. A clean config with the records' hash succeeds; PHI offered during the run is refused.
    data_hash = data_manifest_hash(records)
    phi_file = tmp_path / "sample.json"
    phi_file.write_text(json.dumps(records[0]))
    phi_text = tmp_path / "sample.txt"
    phi_text.write_text("reported for DOE^JOHN")
    with tracker.start_run("clean", {"lr": 1, "data": {"n_records": len(records)}}, data_hash=data_hash) as t:
        run_id = t.run_id
        for call in (
            lambda: t.log_params({"patient_id": "MRN-99887766"}),
            lambda: t.set_tags({"who": "DOE^JOHN"}),
            lambda: t.log_dict({"rows": records}, "records.json"),
            lambda: t.log_text("Report for ROE^RICHARD^Q", "report.txt"),
            lambda: t.log_artifact(phi_file),
            lambda: t.log_artifact(phi_text),
        ):
            with pytest.raises(PHIInTrackingError):
                call()
        t.log_metrics({"loss": 0.5}, step=1)
    import mlflow

    assert mlflow.MlflowClient(tracking_uri=resolve_tracking_uri()).get_run(run_id).info.status == "FINISHED"
    blobs = [p.read_bytes() for p in mlflow_var_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in mlflow_var_dir.rglob("*"))
    found = [s for s in PHI_STRINGS if any(s.encode() in b for b in blobs)]
    assert found == [], f"PHI reached the MLflow store: {found}"
    # The grep can find things: the hash that stands for the records is in the store.
    assert any(data_hash.encode() in b for b in blobs)
