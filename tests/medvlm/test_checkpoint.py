"""Checkpoints: identical logits after reload, merged adapters, manifest checks, pickle refusal."""

from __future__ import annotations

import json

import pytest
import torch

from medvlm.checkpoint import (
    MANIFEST_FILE,
    load_checkpoint,
    merge_adapter,
    save_checkpoint,
    verify_checkpoint,
)
from medvlm.errors import CheckpointError, CheckpointIntegrityError, UnsafeCheckpointError
from medvlm.generate import StudyInput, encode_studies, generate_drafts
from medvlm.processor import collate


def _batch(bundle, make_image):
    studies = [StudyInput([make_image(0), make_image(1)], indication="cough"), StudyInput([make_image(2)])]
    batch = collate(encode_studies(bundle, studies), bundle.tokenizer.pad_token_id, padding_side="left")
    batch.pop("n_images")
    return batch


def _logits(bundle, batch):
    bundle.model.eval()
    with torch.no_grad():
        return bundle.model(**batch).logits


@pytest.fixture
def saved(build_tiny, perturb_lora, tmp_path):
    bundle = build_tiny(
        decoder={"kind": "gemma"}, vision={"kind": "siglip"}, generation={"max_new_tokens": 10}
    )
    perturb_lora(bundle.model)  # a zero adapter would make the reload check vacuous
    path = tmp_path / "ckpt"
    manifest = save_checkpoint(bundle, path)
    return bundle, path, manifest


def test_layout_is_a_plain_hf_checkpoint_plus_adapter(saved):
    _, path, manifest = saved
    files = set(manifest["files"])
    assert {
        "config.json",
        "model.safetensors",
        "medvlm_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "tokenizer.json",
        "processor_config.json",
    } <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    from safetensors import safe_open

    with safe_open(path / "model.safetensors", "pt") as f:
        assert not any("lora_" in k or "base_layer" in k for k in f.keys())  # noqa: SIM118
    assert len(manifest["content_hash"]) == 64


def test_reload_gives_identical_logits_and_config(saved, make_image):
    bundle, path, _ = saved
    batch = _batch(bundle, make_image)
    loaded = load_checkpoint(path)
    assert loaded.config == bundle.config
    assert torch.equal(_logits(bundle, batch), _logits(loaded, batch))


def test_merge_gives_the_same_greedy_generations(saved, make_image):
    bundle, path, _ = saved
    studies = [StudyInput([make_image(0)]), StudyInput([make_image(1)], indication="fever")]
    reference = [d.text for d in generate_drafts(bundle, studies, min_new_tokens=10)]
    merged = load_checkpoint(path, merge=True)
    assert type(merged.model).__name__ == "LlavaForConditionalGeneration"
    assert [d.text for d in generate_drafts(merged, studies, min_new_tokens=10)] == reference
    in_memory = merge_adapter(load_checkpoint(path))
    assert [d.text for d in generate_drafts(in_memory, studies, min_new_tokens=10)] == reference


def test_pickle_files_are_refused(saved):
    _, path, _ = saved
    (path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin"):
        load_checkpoint(path)


def test_pickled_adapter_is_refused(saved):
    """An adapter saved the old way (adapter_model.bin is a pickle) must not load."""
    _, path, _ = saved
    (path / "adapter" / "adapter_model.bin").write_bytes(b"\x80\x04 a pickle would execute code")
    with pytest.raises(UnsafeCheckpointError, match="adapter_model.bin"):
        load_checkpoint(path)


def test_tampered_adapter_is_refused(saved):
    _, path, _ = saved
    adapter = path / "adapter" / "adapter_model.safetensors"
    data = bytearray(adapter.read_bytes())
    data[-1] ^= 0x01
    adapter.write_bytes(bytes(data))
    with pytest.raises(CheckpointIntegrityError, match="adapter_model.safetensors"):
        load_checkpoint(path)


def test_tampered_weights_are_refused(saved):
    _, path, _ = saved
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointIntegrityError, match="model.safetensors"):
        load_checkpoint(path)


def test_added_or_missing_files_and_bad_manifest_are_refused(saved):
    _, path, _ = saved
    (path / "extra.json").write_text("{}")
    with pytest.raises(CheckpointIntegrityError, match="extra.json"):
        verify_checkpoint(path)
    (path / "extra.json").unlink()
    verify_checkpoint(path)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["content_hash"] = "0" * 64
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointIntegrityError, match="content_hash"):
        verify_checkpoint(path)
    (path / "adapter" / "adapter_config.json").unlink()
    with pytest.raises(CheckpointIntegrityError, match="missing"):
        verify_checkpoint(path)


def test_not_a_checkpoint_and_non_empty_target(saved, tmp_path):
    bundle, path, _ = saved
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="not empty"):
        save_checkpoint(bundle, path)
    save_checkpoint(bundle, path, overwrite=True)
    verify_checkpoint(path)


def test_model_without_lora_round_trips(build_tiny, make_image, tmp_path):
    bundle = build_tiny(lora={"r": 0})
    save_checkpoint(bundle, tmp_path / "plain")
    assert not (tmp_path / "plain" / "adapter").exists()
    loaded = load_checkpoint(tmp_path / "plain")
    batch = _batch(bundle, make_image)
    assert torch.equal(_logits(bundle, batch), _logits(loaded, batch))


def test_resume_training_keeps_adapter_trainable(saved):
    _, path, _ = saved
    loaded = load_checkpoint(path, trainable=True)
    assert any(p.requires_grad for n, p in loaded.model.named_parameters() if "lora_" in n)
