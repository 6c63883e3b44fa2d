"""`medvlm train` from a plain Hugging Face folder of every family: LoRA step, reload, merge, stages 0/1, context, resume.

Tiny random checkpoints come from `tests/medvlm/families/_tiny_vlms.py` (saved with `save_pretrained`,
used as a user would). Three representative families run by default (LLaVA-1.5, Gemma 3 = MedGemma,
Qwen2-VL = Lingshu's architecture); the others are marked slow.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medvlm.errors import ConfigError
from pipelines.recipes.train import train_command

REPO_ROOT = Path(__file__).resolve().parents[3]
HF_YAML = REPO_ROOT / "pipelines" / "configs" / "train_lora_hf.yaml"
TINY = REPO_ROOT / "pipelines" / "configs" / "train_tiny.yaml"
DEFAULT_FAMILIES = ("llava", "gemma3", "qwen2_vl")
SLOW_FAMILIES = ("llava_next", "llava_onevision", "qwen2_5_vl", "idefics3", "smolvlm", "paligemma", "mllama")
ALL_FAMILIES = [*DEFAULT_FAMILIES, *(pytest.param(f, marks=pytest.mark.slow) for f in SLOW_FAMILIES)]
QUICK = ["tracking=none", "register=false", "evaluate.enabled=false", "data.cache_dir=null", "lora.steps=1",
         "lora.batch_size=2", "lora.grad_accum=1", "lora.optim.lr=1e-2", "lora.optim.warmup_steps=0",
         "lora.checkpoint_every=0", "projector.batch_size=2", "projector.checkpoint_every=0",
         "projector.optim.warmup_steps=0", "contrastive.batch_size=2", "contrastive.checkpoint_every=0"]


def _tiny_vlms():
    """`tests/medvlm/families/_tiny_vlms.py`, imported by path (the same module its conftest imports)."""
    if "_tiny_vlms" not in sys.modules:
        path = REPO_ROOT / "tests" / "medvlm" / "families" / "_tiny_vlms.py"
        spec = importlib.util.spec_from_file_location("_tiny_vlms", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["_tiny_vlms"] = module
        spec.loader.exec_module(module)
    return sys.modules["_tiny_vlms"]


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    from pipelines.phantoms import PhantomConfig, generate_phantoms

    out = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(out, n=6, seed=1, progress=False, config=PhantomConfig(size=64))
    return out


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """Function: family -> its tiny checkpoint folder (model + processor), built once per module."""
    root = tmp_path_factory.mktemp("hf")
    built: dict[str, Path] = {}

    def _get(family: str) -> Path:
        if family not in built:
            built[family] = _tiny_vlms().save_tiny(family, root / family)
        return built[family]

    return _get


def _train(yaml: Path, init_from: Path, data: Path, out: Path, *extra: str) -> dict:
    return train_command(yaml, [f"model.init_from={init_from}", f"data.dir={data}", f"out_dir={out}", *QUICK, *extra])


def _dataset(data: Path, size: int):
    from pipelines.training.datasets import ImageCache, StudyDataset, load_records

    return StudyDataset(load_records(data, "train"), ImageCache(size), 2)


def _logits(bundle, images) -> torch.Tensor:
    from medvlm import chat

    batch = chat.collate(bundle, [chat.encode_study(bundle, images)])
    bundle.model.eval()
    with torch.inference_mode():
        return bundle.model(**batch).logits.float()


def _state(folder: Path) -> dict[str, np.ndarray]:
    """Base weights of a model folder by module path (`model.vision_tower...`), LoRA tensors left out."""
    from medvlm.loading import load_model

    state = load_model(folder).base_model.state_dict()
    return {k.replace(".base_layer.", "."): v.numpy() for k, v in state.items() if "lora_" not in k}


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_one_lora_step_from_a_hf_folder_then_reload_and_merge_give_the_same_model(family, hf_dir, phantom_dir, tmp_path):
    from safetensors.torch import load_model

    from medvlm import chat
    from medvlm.adapters import apply_lora
    from medvlm.config import GenerationSettings
    from medvlm.generate import StudyInput, generate_drafts
    from medvlm.loading import load_model as load_any
    from medvlm.loading import load_vlm
    from pipelines.training.config import load_train_config
    from pipelines.training.examples import ExampleBuilder
    from pipelines.training.state import latest_state

    hf, out = hf_dir(family), tmp_path / "run"
    summary = _train(HF_YAML, hf, phantom_dir, out, "lora.qa_fraction=0.5")
    lora = summary["stages"]["lora"]
    assert lora["steps_done"] == 1 and lora["finished"] and np.isfinite(lora["first_loss"])
    assert 0 < lora["trainable_params"] < lora["total_params"]
    assert summary["model_source"]["family"] == family and summary["model_source"]["remote_code"] == {}

    reloaded = load_any(summary["checkpoint"])  # the one entry point: a medvlm checkpoint of this family
    assert reloaded.family.name == family
    # The trained weights by another road: a fresh load of the folder + the run's LoRA + the resume state.
    cfg = load_train_config(HF_YAML, [f"model.init_from={hf}"])
    reference = apply_lora(load_vlm(hf), cfg.model.lora)
    load_model(reference.model, str(latest_state(out / "stage2_lora") / "model.safetensors"), strict=True)
    images = [np.random.default_rng(0).random((40, 36), dtype=np.float32)]
    got, want, base = _logits(reloaded, images), _logits(reference, images), _logits(load_vlm(hf), images)
    assert torch.equal(got, want)
    assert (got - base).abs().max() > 1e-6  # the step changed the model

    settings = GenerationSettings(max_new_tokens=6, batch_size=1)
    study = [StudyInput(images)]
    merged = load_any(summary["checkpoint"], merge=True)
    assert generate_drafts(merged, study, settings)[0].text == generate_drafts(reloaded, study, settings)[0].text

    # Labels: the report and the checkpoint's own end-of-turn, nothing of the prompt, never medvlm's `<|end|>`.
    ds = _dataset(phantom_dir, reloaded.config.image_size)
    example = ExampleBuilder(reloaded, ds, None, 0, 0.0, "cpu").example(0, 0)
    supervised = example["labels"][example["labels"] != -100].tolist()
    end = reloaded.tokenizer(chat.turn_format(reloaded).end_of_turn, add_special_tokens=False)["input_ids"]
    assert end and supervised[-len(end):] == end
    text = reloaded.tokenizer.decode(supervised[: -len(end)])
    assert text.strip() == ds.records[0].report.strip() and "<|end|>" not in reloaded.tokenizer.decode(supervised)


def test_stage0_starts_from_the_init_from_tower_of_medvlms_own_model(phantom_dir, tmp_path):
    """Old code built a fresh tower in stage 0 and ignored `init_from`, replacing the checkpoint's tower."""
    from safetensors.numpy import load_file

    from medvlm.build import build_model
    from medvlm.checkpoint import save_checkpoint
    from medvlm.tokenizer import build_tokenizer
    from pipelines.recipes.contrastive import build_tower
    from pipelines.training.config import load_train_config

    cfg = load_train_config(TINY, [f"data.dir={phantom_dir}"])
    texts = [r.report for r in _dataset(phantom_dir, 32).records]
    bundle = build_model(cfg.model, build_tokenizer(cfg.model, texts * 4))
    tower = bundle.llava.model.vision_tower
    with torch.no_grad():  # a "pretrained" tower: unlike any freshly initialised one
        for p in tower.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ckpt = tmp_path / "own"
    save_checkpoint(bundle, ckpt)
    pretrained = {k: v.detach().numpy().copy() for k, v in tower.state_dict().items()}

    out = tmp_path / "run"
    summary = train_command(TINY, [f"data.dir={phantom_dir}", f"out_dir={out}", f"model.init_from={ckpt}",
                                   "stages=[contrastive,projector]", "contrastive.steps=1", "contrastive.optim.lr=1e-7",
                                   "projector.steps=1", *QUICK])
    assert summary["stages"]["contrastive"]["finished"] and summary["stages"]["projector"]["finished"]
    adapted = load_file(str(out / "stage0_contrastive" / "vision_tower.safetensors"))
    fresh, _ = build_tower(cfg.model)  # what the old stage 0 started from
    assert adapted.keys() == pretrained.keys()
    assert max(float(np.abs(adapted[k] - pretrained[k]).max()) for k in adapted) < 1e-5
    assert max(float(np.abs(adapted[k] - v.numpy()).max()) for k, v in fresh.state_dict().items()) > 0.1
    stage1 = _state(out / "stage1_projector" / "checkpoint")  # stage 1 starts from stage 0's tower (frozen)
    assert all(np.array_equal(stage1[f"model.vision_tower.{k}"], v) for k, v in adapted.items())


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_stage0_adapts_the_loaded_tower_or_is_skipped_and_stage1_trains_the_family_projector(
    family, hf_dir, phantom_dir, tmp_path
):
    from medvlm.families import FAMILIES

    hf, out = hf_dir(family), tmp_path / "run"
    original = _state(hf)
    summary = _train(HF_YAML, hf, phantom_dir, out, "stages=[contrastive,projector]", "contrastive.steps=1",
                     "contrastive.optim.lr=1e-7", "projector.steps=1", "projector.optim.lr=1e-2")
    spec = FAMILIES[family]
    tower_keys = [k for k in original if re.match(spec.vision, k) and not re.match(spec.projector, k)]
    if family == "qwen2_vl":  # patch-sequence tower: no pooled image embedding to contrast
        assert "qwen2_vl" in summary["stages"]["contrastive"]["skipped"]
        assert not (out / "stage0_contrastive").exists()
    else:
        from safetensors.numpy import load_file

        adapted = load_file(str(out / "stage0_contrastive" / "vision_tower.safetensors"))
        prefix = "model.vision_tower."
        assert {prefix + k for k in adapted} == set(tower_keys)
        assert max(float(np.abs(adapted[k] - original[prefix + k]).max()) for k in adapted) < 1e-5
    trained = _state(out / "stage1_projector" / "checkpoint")
    assert trained.keys() == original.keys()
    changed = {k for k in original if not np.array_equal(trained[k], original[k])}
    projector = {k for k in original if re.match(spec.projector, k)}
    assert changed and changed <= projector | set(tower_keys)  # decoder and head untouched
    assert changed & projector
    if family == "qwen2_vl":
        assert changed <= projector  # no stage 0: the tower is the checkpoint's, bit for bit


def _llava_336(directory: Path, max_position_embeddings: int = 4096) -> Path:
    """A tiny LLaVA-1.5 at 336 px, 14 px patches: 576 image tokens, as the real one."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tv = _tiny_vlms()
    tok = tv._llava_tok()
    template = tv.chat_template(*tv._roles("USER: ", "ASSISTANT: ", "\n", "</s>"), "<image>", "<s>")
    ip = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=template)
    vision = CLIPVisionConfig(**tv.VISION, image_size=336, patch_size=14)
    text = tv._text(LlamaConfig, tok, max_position_embeddings=max_position_embeddings)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_seq_length=576, vision_feature_layer=-1,
                      image_token_index=tok.convert_tokens_to_ids("<image>"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LlavaForConditionalGeneration(cfg).save_pretrained(directory)
    proc.save_pretrained(directory)
    return directory


def test_context_check_reads_the_loaded_config_not_the_from_scratch_fields(phantom_dir, tmp_path):
    """A LLaVA-1.5 at 336 px (576 image tokens, 4096 context) trains under a YAML whose from-scratch fields say 512."""
    from medvlm import chat
    from medvlm.loading import load_vlm

    hf = _llava_336(tmp_path / "llava336")
    scratch_fields = ["model.decoder.max_position_embeddings=512", "model.tokenizer.max_length=512"]
    summary = _train(HF_YAML, hf, phantom_dir, tmp_path / "run", *scratch_fields)
    assert summary["stages"]["lora"]["steps_done"] == 1

    # The same model with a loaded context that holds the prompt but not prompt + report: refused before training.
    bundle = load_vlm(hf)
    prompt = int(chat.encode_study(bundle, [np.zeros((336, 336), np.float32)])["input_ids"].shape[1])
    assert prompt > 576
    short = Path(shutil.copytree(hf, tmp_path / "short"))
    config = json.loads((short / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = prompt + 4
    (short / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=rf"context is {prompt + 4} tokens.*data.max_views"):
        _train(HF_YAML, short, phantom_dir, tmp_path / "run_short")


def test_gradient_checkpointing_keeps_fewer_activations_with_the_same_loss_and_gradients(hf_dir, phantom_dir, tmp_path):
    import dataclasses

    from medvlm.build import freeze_for_stage
    from pipelines.training.bundles import build_bundle, enable_gradient_checkpointing, resolve_model_config
    from pipelines.training.config import load_train_config
    from pipelines.training.examples import ExampleBuilder
    from pipelines.training.runtime import setup_runtime

    cfg = load_train_config(HF_YAML, [f"model.init_from={hf_dir('qwen2_vl')}", "model.lora.dropout=0.0",
                                      "tracking=none", "gradient_checkpointing=true"])
    cfg = dataclasses.replace(cfg, model=resolve_model_config(cfg.model))
    rt = setup_runtime(cfg)
    assert rt.autocast_dtype is None  # precision auto: float32 on CPU, bf16 autocast only on CUDA
    ds = _dataset(phantom_dir, cfg.model.image_size)

    def step(checkpointing: bool) -> tuple[float, dict, int]:
        bundle = build_bundle(cfg, ds, tmp_path, rt)
        freeze_for_stage(bundle.model, 2, bundle.family)
        if checkpointing:
            enable_gradient_checkpointing(bundle.model)
        bundle.model.train()
        batch = ExampleBuilder(bundle, ds, None, 0, 0.0, "cpu").batch([0, 1], 0)
        kept = []  # elements autograd keeps for the backward pass (checkpointed layers keep only their inputs)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel()) or t, lambda t: t):
            loss = bundle.model(**batch).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in bundle.model.named_parameters() if p.requires_grad}
        return float(loss.detach()), grads, sum(kept)

    loss, grads, kept = step(False)
    loss_gc, grads_gc, kept_gc = step(True)
    assert kept_gc < 0.7 * kept, (kept, kept_gc)
    assert loss_gc == pytest.approx(loss, abs=1e-6)
    assert grads.keys() == grads_gc.keys() and any("lora_" in n for n in grads)
    for name, g in grads.items():
        torch.testing.assert_close(grads_gc[name], g, atol=1e-6, rtol=1e-5)


def test_resume_of_a_hf_family_ends_where_an_unbroken_run_ends(hf_dir, phantom_dir, tmp_path):
    hf = hf_dir("gemma3")
    common = ["lora.steps=3", "lora.qa_fraction=0.5", "lora.optim.lr=3e-3"]
    unbroken = _train(HF_YAML, hf, phantom_dir, tmp_path / "a", *common)
    assert not unbroken["stopped"]
    runs = 0
    while True:  # killed after every step, restarted with the same command
        s = _train(HF_YAML, hf, phantom_dir, tmp_path / "b", *common, "stop_after=1")
        runs += 1
        if not s["stopped"]:
            break
        assert runs < 5
    assert runs == 3
    a, b = (_weights(p / "checkpoint") | _weights(p / "checkpoint" / "adapter") for p in (tmp_path / "a", tmp_path / "b"))
    assert a.keys() == b.keys() and any("lora_" in k for k in a)
    assert max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a) <= 1e-6


def _sign_all(store, phantom_dir: Path) -> None:
    """Draft and sign every phantom study in the review store, as radiologists do in the dashboard."""
    from pipelines.store import jobs, reviews
    from pipelines.store.studies import add_study

    for line in (phantom_dir / "reports.jsonl").read_text().splitlines():
        rec = json.loads(line)
        files = [str((phantom_dir / v["path"]).resolve()) for v in rec["views"]]
        meta = {"files": files, "views": [v["view"] for v in rec["views"]], "inputs": files[:1], "rejected": []}
        add_study(store, rec["study_uid"], source="test-intake", metadata=meta)
        jobs.enqueue(store, rec["study_uid"], "medvlm/test", "p" * 64, source="test-intake")
        job = jobs.claim(store, "worker-1", 60)
        jobs.complete(store, job.id, "worker-1", jobs.DraftPayload(findings=rec["findings"], impression=rec["impression"]))
        reviews.sign_version(store, reviews.create_version_from_draft(store, job.id).id, signer="rad", role="radiologist")


def test_lora_trains_on_the_dashboards_approved_reports(hf_dir, phantom_dir, tmp_path):
    """`medvlm export-dataset` output (signed reports, de-identified images) is a data folder `train` reads."""
    from pipelines.export.dataset import export_approved_pairs
    from pipelines.store import open_store

    source = Path(shutil.copytree(phantom_dir, tmp_path / "source"))
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        _sign_all(store, source)
        key = tmp_path / "deid.key"
        key.write_bytes(b"0123456789abcdef0123456789abcdef\n")
        exported = export_approved_pairs(store, tmp_path / "export", key_file=key)
    finally:
        store.close()
    assert exported.studies == 6
    summary = _train(HF_YAML, hf_dir("llava"), tmp_path / "export", tmp_path / "run", "data.train_split=train,val,test")
    assert summary["stages"]["lora"]["steps_done"] == 1
    manifest = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert manifest["model_source"]["family"] == "llava"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lora_step_runs_under_bf16_autocast_on_cuda(hf_dir, phantom_dir, tmp_path):
    from pipelines.training.config import load_train_config
    from pipelines.training.runtime import setup_runtime

    assert setup_runtime(load_train_config(HF_YAML, ["tracking=none"])).autocast_dtype == torch.bfloat16
    summary = _train(HF_YAML, hf_dir("gemma3"), phantom_dir, tmp_path / "run")
    assert np.isfinite(summary["stages"]["lora"]["first_loss"])

