"""Loading Hugging Face folders: refusals with typed errors, remote code pinning, one rescale, fingerprints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FAMILIES
from safetensors.torch import load_file, save_file

from medvlm import chat
from medvlm.adapters import apply_lora
from medvlm.checkpoint import save_checkpoint
from medvlm.config import LoraSettings, ModelConfig, PromptConfig
from medvlm.errors import (
    CheckpointError,
    ConfigError,
    RemoteCodeChangedError,
    RemoteCodeError,
    UnsafeCheckpointError,
    UnsupportedFamilyError,
    WeightsMismatchError,
)
from medvlm.loading import REMOTE_CODE_LOCK, is_medvlm_checkpoint, load_model, load_vlm, model_fingerprint
from medvlm.processor import encode_study as own_encode_study

END_OF_TURN = {"llava": "</s>", "llava_next": "</s>", "llava_onevision": "<|im_end|>", "gemma3": "<end_of_turn>",
               "qwen2_vl": "<|im_end|>", "qwen2_5_vl": "<|im_end|>", "idefics3": "<end_of_utterance>",
               "smolvlm": "<end_of_utterance>", "paligemma": "<eos>", "mllama": "<|eot_id|>"}
RAMP = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (64, 1))  # (64, 64), 0 .. 1 left to right


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _edit_weights(folder, change):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_wrong_family_lists_the_supported_ones(copy_family):
    folder = copy_family("llava")
    _edit_config(folder, model_type="blip-2")
    with pytest.raises(UnsupportedFamilyError, match="not a supported") as err:
        load_vlm(folder)
    assert all(name in str(err.value) for name in FAMILIES)
    with pytest.raises(CheckpointError, match="only for remote-code"):
        load_vlm(copy_family("gemma3"), family="llava")  # the Gemma 3 loaded as LLaVA


@pytest.mark.parametrize("change", ["missing", "unexpected", "reshaped"])
def test_weights_that_would_be_random_are_refused(copy_family, change):
    folder = copy_family("gemma3")
    edits = {
        "missing": lambda t: t.pop(next(k for k in t if "multi_modal_projector" in k)),
        "unexpected": lambda t: t.update({"model.extra_head.weight": torch.zeros(2, 2)}),
        "reshaped": lambda t: t.update({k: torch.zeros(3, 3) for k in [next(k for k in t if "q_proj" in k)]}),
    }
    _edit_weights(folder, edits[change])
    with pytest.raises((WeightsMismatchError, RuntimeError)) as err:
        load_vlm(folder)
    if change != "reshaped":  # transformers itself raises on a shape mismatch unless told to ignore it
        assert isinstance(err.value, WeightsMismatchError) and "random" in str(err.value)


def test_pickle_and_missing_safetensors_are_refused(copy_family):
    folder = copy_family("llava")
    (folder / "training_args.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        load_model(folder)
    (folder / "training_args.bin").unlink()
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="safetensors"):
        load_vlm(folder)


REMOTE_CODE = '''from transformers import LlavaConfig, LlavaForConditionalGeneration


class CustomLlavaConfig(LlavaConfig):
    model_type = "custom_llava"


class CustomLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    config_class = CustomLlavaConfig
'''


def test_remote_code_needs_the_flag_and_is_pinned(copy_family):
    from transformers import LlavaForConditionalGeneration

    folder = copy_family("llava")
    # LLaVA saves legacy key names that transformers maps back only for model_type "llava"; a remote
    # model has its own names (without this, load_vlm refuses it: lm_head.weight would be random)
    state = LlavaForConditionalGeneration.from_pretrained(folder).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "modeling_custom.py").write_text(REMOTE_CODE)
    _edit_config(folder, model_type="custom_llava", auto_map={"AutoConfig": "modeling_custom.CustomLlavaConfig",
                                   "AutoModelForImageTextToText": "modeling_custom.CustomLlavaForConditionalGeneration"})
    with pytest.raises(RemoteCodeError, match="trust_remote_code"):
        load_vlm(folder)
    # its own model_type is on no allow-list: the family is the transformers class its model class subclasses
    bundle = load_vlm(folder, trust_remote_code=True)
    assert type(bundle.model).__name__ == "CustomLlavaForConditionalGeneration" and bundle.family.name == "llava"
    with pytest.raises(UnsupportedFamilyError):  # an explicit family must itself be supported
        load_vlm(folder, trust_remote_code=True, family="custom_llava")
    assert load_vlm(folder, trust_remote_code=True, family="llava").family.name == "llava"
    hashes = bundle.source["remote_code"]
    assert list(hashes) == ["modeling_custom.py"] and len(hashes["modeling_custom.py"]) == 64
    assert json.loads((folder / REMOTE_CODE_LOCK).read_text())["files"] == hashes
    assert load_vlm(folder, trust_remote_code=True, family="llava").source["remote_code"] == hashes  # unchanged: loads again
    with pytest.raises(RemoteCodeChangedError, match="modeling_custom.py"):
        load_vlm(folder, trust_remote_code=True, family="llava", remote_code={"modeling_custom.py": "0" * 64})
    (folder / "modeling_custom.py").write_text(REMOTE_CODE + "\nprint('changed')\n")
    with pytest.raises(RemoteCodeChangedError, match="modeling_custom.py"):
        load_vlm(folder, trust_remote_code=True, family="llava")


def _expected_range(image_processor) -> tuple[float, float]:
    mean, std = np.asarray(image_processor.image_mean), np.asarray(image_processor.image_std)
    return float(((0 - mean) / std).min()), float(((1 - mean) / std).max())


@pytest.mark.parametrize("family", ["llava", "gemma3", "idefics3", "mllama"])
def test_a_ramp_reaches_the_model_in_the_expected_range(family, family_dir):
    bundle = load_vlm(family_dir(family))
    pixels = chat.encode_study(bundle, [RAMP])["pixel_values"]
    lo, hi = _expected_range(bundle.processor.image_processor)
    real = pixels[pixels != 0] if family in ("idefics3", "mllama") else pixels  # zero padding of tiles/images
    assert float(real.min()) == pytest.approx(lo, abs=0.05) and float(real.max()) == pytest.approx(hi, abs=0.05)


def test_own_processor_path_rescales_once_with_a_pretrained_processor(family_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(family_dir("llava"))  # divides by 255 itself
    enc = own_encode_study(processor, PromptConfig(), [RAMP], image_seq_length=16, max_views=3)
    lo, hi = _expected_range(processor.image_processor)
    assert float(enc["pixel_values"].min()) == pytest.approx(lo, abs=0.05)
    assert float(enc["pixel_values"].max()) == pytest.approx(hi, abs=0.05)


@pytest.mark.parametrize("family", FAMILIES)
def test_turns_come_from_the_checkpoint(family, family_dir):
    bundle = load_vlm(family_dir(family))
    turns = chat.turn_format(bundle)
    assert turns.end_of_turn == END_OF_TURN[family]
    assert bundle.tokenizer.convert_tokens_to_ids(END_OF_TURN[family]) in turns.stop_token_ids


def test_context_check_uses_the_loaded_config(copy_family):
    ModelConfig(init_from="x", image_size=336)  # LLaVA-1.5 at 336 px: no from-scratch context check
    folder = copy_family("llava")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 20
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="max_position_embeddings=20"):
        load_vlm(folder)


def test_fingerprint_of_a_folder_is_stable_and_content_based(copy_family):
    folder = copy_family("llava")
    first = model_fingerprint(folder)
    assert model_fingerprint(folder) == first and first.adapter_hash is None
    (folder / REMOTE_CODE_LOCK).write_text("{}")  # our own lock file is not part of the model
    assert model_fingerprint(folder) == first
    _edit_config(folder, note="changed")
    changed = model_fingerprint(folder)
    assert changed.model_version != first.model_version and changed.weights_hash == first.weights_hash


@pytest.mark.parametrize("family", ["qwen2_vl", "gemma3"])
def test_lora_checkpoint_of_a_family_round_trips(family, family_dir, tmp_path, perturb_lora):
    bundle = apply_lora(load_vlm(family_dir(family)), LoraSettings(r=2, alpha=4, dropout=0.0))
    perturb_lora(bundle.model)
    save_checkpoint(bundle, tmp_path / "ckpt")
    assert is_medvlm_checkpoint(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.family.name == family
    enc = chat.collate(bundle, [chat.encode_study(bundle, [RAMP])], padding_side="left")
    bundle.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**enc).logits, bundle.model(**enc).logits, rtol=0, atol=1e-5)
