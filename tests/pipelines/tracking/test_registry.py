"""Model registry on a real MLflow SQLite store in tmp_path: versions, release gate, URI resolution, HF folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from medvlm.errors import CheckpointError, CheckpointIntegrityError, UnsafeCheckpointError
from pipelines.tracking.registry import (
    RegistryError,
    champion_exists,
    checkpoint_hashes,
    promote_if_better,
    register_checkpoint,
    resolve_model_uri,
)
from pipelines.tracking.tracker import MlflowTracker, resolve_tracking_uri


def fake_checkpoint(root: Path, seed: int, adapter: bool = True, weights: bool = True) -> Path:
    """A checkpoint folder of plain files: config, safetensors weights (+ adapter), a sha256 manifest."""
    from safetensors.numpy import save_file

    from medvlm.checkpoint import content_hash

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "medvlm_config.json").write_text(json.dumps({"hidden_size": 32, "seed": seed}))
    if weights:
        save_file({"w": rng.standard_normal((4, 4)).astype(np.float32)}, str(root / "model.safetensors"))
    if adapter:
        (root / "adapter").mkdir()
        save_file(
            {"lora_A": rng.standard_normal((2, 4)).astype(np.float32)},
            str(root / "adapter" / "adapter_model.safetensors"),
        )
    files = {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }
    manifest = {"format": 1, "files": files, "content_hash": content_hash(files)}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


BASELINES = {"most_common": {"clinical_macro_f1": 0.05, "bleu_4": 0.2},
             "nearest_neighbour": {"clinical_macro_f1": 0.3}}
"""Baseline figures every registered version carries (the gate refuses a version without them)."""


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_release_gate_moves_champion_only_on_improvement(mlflow_var_dir, tmp_path):
    import mlflow

    assert not champion_exists()  # empty store
    ck1, ck2, ck3 = (fake_checkpoint(tmp_path / f"ck{i}", seed=i) for i in (1, 2, 3))
    v1 = register_checkpoint(ck1, {"clinical_macro_f1": 0.50, "bleu_4": 0.1}, data_hash="d" * 64,
                             baselines=BASELINES)
    assert v1.version == "1"
    assert v1.tags["clinical_macro_f1"] == "0.5" and v1.tags["data_hash"] == "d" * 64
    assert v1.tags["baseline_nearest_neighbour_clinical_macro_f1"] == "0.3" and v1.tags["format"] == "medvlm"
    assert v1.tags["adapter_hash"] == checkpoint_hashes(ck1)["adapter_hash"] != "none"
    assert v1.tags["content_hash"] == json.loads((ck1 / "manifest.json").read_text())["content_hash"]
    d1 = promote_if_better(v1.version)
    assert d1.promoted and d1.champion_version is None
    assert champion_exists()

    v2 = register_checkpoint(ck2, {"clinical_macro_f1": 0.40}, baselines=BASELINES)
    d2 = promote_if_better(v2.version)
    assert not d2.promoted and d2.champion_version == "1" and d2.champion_value == pytest.approx(0.5)

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(), registry_uri=resolve_tracking_uri())
    assert str(client.get_model_version_by_alias("medvlm", "champion").version) == "1"
    assert client.get_model_version("medvlm", "2").tags["gate_decision"] == "rejected"

    v3 = register_checkpoint(ck3, {"clinical_macro_f1": 0.60}, baselines=BASELINES)
    d3 = promote_if_better(v3.version)
    assert d3.promoted and d3.champion_version == "1"
    champ = client.get_model_version_by_alias("medvlm", "champion")
    assert str(champ.version) == "3"
    assert champ.tags["gate_decision"] == "promoted" and champ.tags["gate_compared_to"] == "1"
    assert champ.tags["git_commit"] and champ.tags["weights_hash"] == checkpoint_hashes(ck3)["weights_hash"]
    # Each registering run ended; nothing pickled, the version points at the artifact folder.
    run = client.get_run(v3.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["clinical_macro_f1"] == pytest.approx(0.6)
    assert champ.source.endswith("/checkpoint")
    assert mlflow.active_run() is None

    # A tie keeps the champion; a version without the metric is never promoted.
    v4 = register_checkpoint(ck3, {"clinical_macro_f1": 0.60}, baselines=BASELINES)
    assert not promote_if_better(v4.version).promoted
    v5 = register_checkpoint(ck2, {"bleu_4": 0.9}, baselines=BASELINES)
    assert not promote_if_better(v5.version).promoted
    assert str(client.get_model_version_by_alias("medvlm", "champion").version) == "3"

    # models:/ URIs resolve to local folders holding exactly the registered files.
    cache = tmp_path / "cache"
    got = resolve_model_uri("models:/medvlm@champion", cache_dir=cache)
    assert got.is_dir() and _files(got) == _files(ck3)
    assert _files(resolve_model_uri("models:/medvlm/1", cache_dir=cache)) == _files(ck1)
    assert resolve_model_uri("models:/medvlm@champion", cache_dir=cache) == got  # cached version reused
    with pytest.raises(RegistryError, match="does not resolve"):
        resolve_model_uri("models:/medvlm@nope", cache_dir=cache)
    with pytest.raises(RegistryError, match="does not resolve"):
        resolve_model_uri("models:/medvlm/99", cache_dir=cache)


def test_nan_metric_is_not_promoted_even_without_champion(mlflow_var_dir, tmp_path):
    v = register_checkpoint(
        fake_checkpoint(tmp_path / "ck", seed=0, adapter=False), {"clinical_macro_f1": float("nan")}
    )
    assert v.tags["adapter_hash"] == "none"
    decision = promote_if_better(v.version)
    assert not decision.promoted and "no finite" in decision.reason
    assert not champion_exists()


def test_register_into_an_existing_training_run(mlflow_var_dir, tmp_path):
    ck = fake_checkpoint(tmp_path / "ck", seed=5)
    with MlflowTracker(experiment="train").start_run("train", {"lr": 1}) as tracker:
        v = register_checkpoint(ck, {"clinical_macro_f1": 0.35}, run_id=tracker.run_id, baselines=BASELINES)
        assert tracker.run_id == v.run_id  # the caller's run is still open
    assert promote_if_better(v.version).promoted
    assert _files(resolve_model_uri("models:/medvlm@champion", cache_dir=tmp_path / "c")) == _files(ck)


def test_local_paths_and_bad_checkpoints(var_dir, tmp_path):
    assert not champion_exists()
    assert not (var_dir / "mlflow.db").exists()  # asking does not create a store
    ck = fake_checkpoint(tmp_path / "ck", seed=1)
    assert resolve_model_uri(ck) == ck
    assert resolve_model_uri(str(ck)) == ck
    with pytest.raises(RegistryError, match="not a folder"):
        resolve_model_uri(tmp_path / "missing")
    with pytest.raises(RegistryError, match="unsupported model URI"):
        resolve_model_uri("models:/medvlm")
    metrics = {"clinical_macro_f1": 1.0}
    with pytest.raises(CheckpointError, match="no config.json"):
        register_checkpoint(tmp_path, metrics)  # neither a medvlm checkpoint nor a Hugging Face folder
    (ck / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(CheckpointIntegrityError):
        register_checkpoint(ck, metrics)
    (ck / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(UnsafeCheckpointError):
        register_checkpoint(ck, metrics)
    no_weights = fake_checkpoint(tmp_path / "nw", seed=2, adapter=False, weights=False)
    with pytest.raises(RegistryError, match="safetensors"):
        register_checkpoint(no_weights, metrics)
    assert not (var_dir / "mlflow.db").exists()  # refused before touching the store


def test_gate_never_promotes_below_the_baselines_even_on_an_empty_registry(mlflow_var_dir, tmp_path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(), registry_uri=resolve_tracking_uri())
    ck = fake_checkpoint(tmp_path / "ck", seed=7)
    zero = register_checkpoint(ck, {"clinical_macro_f1": 0.0}, baselines=BASELINES)
    decision = promote_if_better(zero.version)
    assert not decision.promoted and decision.champion_version is None
    assert decision.baselines == {"most_common": 0.05, "nearest_neighbour": 0.3}
    assert "does not beat baseline most_common 0.0500, nearest_neighbour 0.3000" in decision.reason
    assert not champion_exists()
    tags = client.get_model_version("medvlm", zero.version).tags
    assert tags["gate_decision"] == "rejected" and tags["gate_baseline_nearest_neighbour"] == "0.3"
    assert tags["gate_baseline_most_common"] == "0.05"

    between = register_checkpoint(ck, {"clinical_macro_f1": 0.2}, baselines=BASELINES)  # beats one of two
    assert not promote_if_better(between.version).promoted
    unscored = register_checkpoint(ck, {"clinical_macro_f1": 0.9})  # no baseline figures recorded
    refused = promote_if_better(unscored.version)
    assert not refused.promoted and "no baseline figures" in refused.reason
    assert not champion_exists()
    best = register_checkpoint(ck, {"clinical_macro_f1": 0.31}, baselines=BASELINES)
    assert promote_if_better(best.version).promoted and champion_exists()


@pytest.fixture(scope="module")
def gemma3_dir(tmp_path_factory) -> Path:
    from _families import save_family

    return save_family("gemma3", tmp_path_factory.mktemp("hf") / "medgemma-tiny")


def test_a_hugging_face_folder_is_registered_and_loads_as_champion(mlflow_var_dir, gemma3_dir, tmp_path):
    """`models:/medvlm@champion` can be a MedGemma-style folder that was only evaluated, never trained."""
    from medvlm.loading import model_fingerprint
    from pipelines.tracking.registry import load_model

    version = register_checkpoint(gemma3_dir, {"clinical_macro_f1": 0.4}, baselines=BASELINES)
    assert version.tags["format"] == "huggingface" and version.tags["family"] == "gemma3"
    assert version.tags["content_hash"] == model_fingerprint(gemma3_dir).model_version
    assert version.tags["adapter_hash"] == "none" and "remote_code" not in version.tags
    assert promote_if_better(version.version).promoted
    assert _files(resolve_model_uri("models:/medvlm@champion", cache_dir=tmp_path / "c")) == _files(gemma3_dir)
    bundle = load_model("models:/medvlm@champion")
    assert bundle.family.name == "gemma3" and type(bundle.model).__name__ == "Gemma3ForConditionalGeneration"


def test_hugging_face_folders_that_must_not_be_registered(var_dir, gemma3_dir, tmp_path):
    import shutil

    from _families import add_remote_code, save_family

    from medvlm.errors import RemoteCodeError, UnsupportedFamilyError

    folder = shutil.copytree(gemma3_dir, tmp_path / "m")
    (folder / "optimizer.pt").write_bytes(b"\x80\x04N.")
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        register_checkpoint(folder, {"clinical_macro_f1": 0.5})
    (folder / "optimizer.pt").unlink()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "blip-2"}))
    with pytest.raises(UnsupportedFamilyError, match="gemma3"):
        register_checkpoint(folder, {"clinical_macro_f1": 0.5})
    remote = add_remote_code(save_family("llava", tmp_path / "remote"))
    with pytest.raises(RemoteCodeError, match="--trust-remote-code"):
        register_checkpoint(remote, {"clinical_macro_f1": 0.5})
    assert not (var_dir / "mlflow.db").exists()  # refused before touching the store
