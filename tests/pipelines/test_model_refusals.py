"""Hugging Face folders the CLI must refuse: one actionable line, exit 2, nothing drafted; trusted remote code
is pinned, audited and registered with its hashes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _draft_worker import make_phantoms
from _families import add_remote_code, save_family
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> Path:
    return save_family("llava", tmp_path_factory.mktemp("refusals") / "llava")


@pytest.fixture(scope="module")
def study_root(tmp_path_factory) -> Path:
    """One phantom study (frontal + lateral) in its own folder."""
    root = make_phantoms(tmp_path_factory.mktemp("refusals-data") / "data", n=1, seed=2)
    (root / "reports.jsonl").unlink()
    return root


def _cli(*args: str):
    from pipelines.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _drop_projector(folder: Path) -> None:
    tensors = load_file(folder / "model.safetensors")
    tensors.pop(next(k for k in tensors if "multi_modal_projector" in k))
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


BREAK = {
    "wrong_family": (lambda f: _edit_config(f, model_type="blip-2"), "UnsupportedFamilyError", "Supported: llava"),
    "missing_tensor": (_drop_projector, "WeightsMismatchError", "multi_modal_projector"),
    "pickle": (lambda f: (f / "training_args.bin").write_bytes(b"\x80\x04N."), "UnsafeCheckpointError", "pickle"),
    "remote_code_without_flag": (add_remote_code, "RemoteCodeError", "--trust-remote-code"),
}


def _commands(folder: Path, study: Path, data: Path, db: str) -> dict[str, list]:
    return {
        "draft": ["draft", "--model", folder, "--source", study, "--db", db, "--workers", "1"],
        "ask": ["ask", "Any effusion?", "--model", folder, "--study", study],
        "evaluate": ["evaluate", "--model", folder, "--data", data],
        "dashboard": ["dashboard", "--model", folder, "--db", db, "--port", "1"],
    }


@pytest.mark.parametrize("case", sorted(BREAK))
def test_refused_folders_exit_2_with_one_actionable_line(case, llava_dir, study_root, tmp_path):
    folder = shutil.copytree(llava_dir, tmp_path / "model")
    breaker, error, hint = BREAK[case]
    breaker(folder)
    study = next(p for p in study_root.iterdir() if p.is_dir())
    db = f"sqlite:///{tmp_path / 'store.db'}"
    for name, argv in _commands(folder, study, study_root, db).items():
        result = _cli(*argv)
        assert result.exit_code == 2, (name, result.output)
        # (a weight-loading bar may precede it here: the test process imported transformers before the CLI
        # turned bars off; `medvlm` run from a shell imports it afterwards)
        text = result.output[result.output.find("error: "):]
        assert text.startswith(f"error: {error}") and hint in " ".join(text.split()), (name, result.output)
        assert text.count("error: ") == 1
        assert "Traceback" not in result.output
    assert not (tmp_path / "store.db").exists()  # refused before anything was queued


def test_trusted_remote_code_is_audited_registered_and_pinned(llava_dir, study_root, tmp_path, monkeypatch,
                                                              mlflow_var_dir):
    from compliance.audit import find_events
    from medvlm.loading import REMOTE_CODE_LOCK
    from pipelines.store import open_store
    from pipelines.store.model_loads import TRUSTED_REMOTE_CODE
    from pipelines.tracking.registry import load_model, register_checkpoint

    folder = add_remote_code(shutil.copytree(llava_dir, tmp_path / "remote"))
    db = f"sqlite:///{tmp_path / 'store.db'}"
    first = _cli("draft", "--model", folder, "--source", study_root, "--db", db, "--workers", "0",
                 "--max-new-tokens", "4", "--trust-remote-code")
    assert first.exit_code == 0, first.output
    pinned = json.loads((folder / REMOTE_CODE_LOCK).read_text())["files"]
    assert list(pinned) == ["modeling_remote.py"]
    with open_store(db) as store, store.transaction() as session:
        events = find_events(session, action=TRUSTED_REMOTE_CODE)
    assert len(events) == 1 and events[0].details["remote_code"] == pinned and events[0].details["family"] == "llava"

    version = register_checkpoint(folder, {"clinical_macro_f1": 0.1}, trust_remote_code=True)
    assert json.loads(version.tags["remote_code"]) == pinned and version.tags["family"] == "llava"
    assert type(load_model("models:/medvlm/1", trust_remote_code=True).model).__name__ == "RemoteLlava"

    (folder / "modeling_remote.py").write_text((folder / "modeling_remote.py").read_text() + "\n# changed\n")
    changed = _cli("draft", "--model", folder, "--source", study_root, "--db", db, "--workers", "0",
                   "--trust-remote-code")
    assert changed.exit_code == 2 and "RemoteCodeChangedError" in changed.output and "modeling_remote.py" in changed.output


def test_dashboard_loads_trusted_remote_code_only_when_told_and_audits_it(llava_dir, tmp_path):
    from compliance.audit import find_events
    from dashboard import logic
    from medvlm.errors import RemoteCodeError
    from pipelines.store import open_store
    from pipelines.store.model_loads import TRUSTED_REMOTE_CODE

    folder = add_remote_code(shutil.copytree(llava_dir, tmp_path / "remote"))
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        with pytest.raises(RemoteCodeError):
            logic.load_model(str(folder), store, env={})
        bundle = logic.load_model(str(folder), store, env={"MEDVLM_TRUST_REMOTE_CODE": "1"})
        assert type(bundle.model).__name__ == "RemoteLlava"
        plain = logic.load_model(str(llava_dir), store, env={})  # a plain folder is not an audited event
        assert plain.family.name == "llava" and not plain.source["remote_code"]
        with store.transaction() as session:
            events = find_events(session, action=TRUSTED_REMOTE_CODE)
    assert [e.actor for e in events] == ["dashboard"] and list(events[0].details["remote_code"]) == ["modeling_remote.py"]


def test_train_takes_the_flag_for_a_remote_code_starting_point(llava_dir, tmp_path):
    """`medvlm train ... model.init_from=DIR` refuses remote code unless `--trust-remote-code` is given."""
    folder = add_remote_code(shutil.copytree(llava_dir, tmp_path / "remote"))
    data = make_phantoms(tmp_path / "data", n=4, seed=3, size=64)
    recipe = Path(__file__).resolve().parents[2] / "pipelines" / "configs" / "train_lora_hf.yaml"
    argv = ["train", recipe, f"model.init_from={folder}", f"data.dir={data}", f"out_dir={tmp_path / 'out'}",
            "tracking=none", "register=false", "evaluate.enabled=false", "data.cache_dir=null", "lora.steps=1",
            "lora.batch_size=2", "lora.grad_accum=1", "lora.checkpoint_every=0"]
    refused = _cli(*argv)
    assert refused.exit_code == 2 and "RemoteCodeError" in refused.output, refused.output
    trained = _cli(*argv, "--trust-remote-code")
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "out" / "checkpoint" / "medvlm_config.json").is_file()


def test_a_maira_like_model_is_read_as_the_family_it_is_built_on_and_its_fine_tune_reloads(llava_dir, study_root,
                                                                                           tmp_path):
    """Own model_type + AutoModelForVision2Seq (MAIRA-2's layout): drafts, asks, trains; the trained
    checkpoint carries the remote code and loads with its own class only with the flag."""
    from compliance.audit import find_events
    from pipelines.store import open_store
    from pipelines.store.model_loads import TRUSTED_REMOTE_CODE

    folder = add_remote_code(shutil.copytree(llava_dir, tmp_path / "maira"), own_model_type=True)
    study = next(p for p in study_root.iterdir() if p.is_dir())
    db = f"sqlite:///{tmp_path / 'store.db'}"
    refused = _cli("ask", "Any effusion?", "--model", folder, "--study", study)
    assert refused.exit_code == 2 and "RemoteCodeError" in refused.output
    drafted = _cli("draft", "--model", folder, "--source", study_root, "--db", db, "--workers", "0",
                   "--max-new-tokens", "4", "--trust-remote-code")
    assert drafted.exit_code == 0, drafted.output
    with open_store(db) as store, store.transaction() as session:
        events = find_events(session, action=TRUSTED_REMOTE_CODE)
    assert [e.details["family"] for e in events] == ["llava"]  # read as the family its class is built on

    data = make_phantoms(tmp_path / "data", n=4, seed=3, size=64)
    recipe = Path(__file__).resolve().parents[2] / "pipelines" / "configs" / "train_lora_hf.yaml"
    trained = _cli("train", recipe, f"model.init_from={folder}", f"data.dir={data}", f"out_dir={tmp_path / 'out'}",
                   "tracking=none", "register=false", "evaluate.enabled=false", "data.cache_dir=null", "lora.steps=1",
                   "lora.batch_size=2", "lora.grad_accum=1", "lora.checkpoint_every=0", "--trust-remote-code")
    assert trained.exit_code == 0, trained.output
    checkpoint = tmp_path / "out" / "checkpoint"
    assert (checkpoint / "modeling_remote.py").is_file()
    plain = _cli("ask", "Any effusion?", "--model", checkpoint, "--study", study)
    assert plain.exit_code == 2 and "RemoteCodeError" in plain.output, plain.output
    from pipelines.tracking.registry import load_model

    bundle = load_model(checkpoint, trust_remote_code=True, merge=True)
    assert type(bundle.model).__name__ == "MairaLikeForConditionalGeneration" and bundle.family.name == "llava"
    asked = _cli("ask", "Any effusion?", "--model", checkpoint, "--study", study, "--trust-remote-code")
    assert asked.exit_code == 0, asked.output


def test_remote_code_built_on_no_supported_family_is_refused_by_name(llava_dir, study_root, tmp_path):
    folder = add_remote_code(shutil.copytree(llava_dir, tmp_path / "other"), own_model_type=True)
    code = (folder / "modeling_remote.py").read_text()
    # a model class that copies instead of subclassing a supported transformers class
    (folder / "modeling_remote.py").write_text(code.replace("class MairaLikeForConditionalGeneration(LlavaForConditionalGeneration)",
                                                            "class MairaLikeForConditionalGeneration(LlavaForConditionalGeneration.__base__)"))
    study = next(p for p in study_root.iterdir() if p.is_dir())
    result = _cli("ask", "Any effusion?", "--model", folder, "--study", study, "--trust-remote-code")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "UnsupportedFamilyError" in text and "MairaLikeForConditionalGeneration" in text and "Supported: llava" in text


def test_dtype_option_loads_bfloat16_and_refuses_others(llava_dir, study_root):
    from pipelines.drafting.identity import DraftError, DraftOptions, model_identity
    from pipelines.tracking.registry import load_model

    study = next(p for p in study_root.iterdir() if p.is_dir())
    assert load_model(llava_dir, dtype="bfloat16").model.dtype == torch.bfloat16
    asked = _cli("ask", "Any effusion?", "--model", llava_dir, "--study", study, "--dtype", "bfloat16")
    assert asked.exit_code == 0, asked.output
    bad = _cli("ask", "Any effusion?", "--model", llava_dir, "--study", study, "--dtype", "float16")
    assert bad.exit_code == 2 and "float16" in bad.output
    with pytest.raises(DraftError, match="--dtype"):
        DraftOptions(dtype="float16")
    fp32, bf16 = model_identity(llava_dir), model_identity(llava_dir, DraftOptions(dtype="bfloat16"))
    assert bf16.dtype == "bfloat16" and bf16.prompt_hash != fp32.prompt_hash  # bf16 drafts are not fp32's
