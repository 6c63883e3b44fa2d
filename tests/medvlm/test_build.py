"""Building LLaVA models: tower x decoder matrix, local checkpoints, existing LLaVA checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from medvlm.build import build_model
from medvlm.errors import ConfigError
from medvlm.generate import StudyInput, generate_drafts
from medvlm.processor import collate, encode_study, encode_training_example
from medvlm.prompts import format_report

TOWERS = ["vit", "siglip", "clip", "dinov2"]
DECODERS = ["llama", "qwen2", "gemma", "phi3"]


def _training_batch(bundle, make_image, n_views=2):
    cfg = bundle.config
    enc = encode_study(
        bundle.processor,
        cfg.prompt,
        [make_image(i) for i in range(n_views)],
        image_seq_length=cfg.image_seq_length,
        max_views=cfg.max_views,
        indication="cough",
    )
    ex = encode_training_example(
        bundle.processor, enc, format_report("Heart normal.", "No acute disease."), max_length=1024
    )
    batch = collate([ex, ex], bundle.tokenizer.pad_token_id)
    batch.pop("n_images")
    return batch


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("tower", TOWERS)
def test_tower_decoder_matrix_forward_backward_generate(tower, decoder, build_tiny, make_image):
    lora = {"target_modules": ["qkv_proj"]} if decoder == "phi3" else {}
    bundle = build_tiny(vision={"kind": tower}, decoder={"kind": decoder}, lora=lora)
    batch = _training_batch(bundle, make_image)
    out = bundle.model(**batch)
    assert math.isfinite(out.loss.item())
    out.loss.backward()
    trainable = [(n, p) for n, p in bundle.model.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable)
    assert any("lora_B" in n and p.grad.abs().sum() > 0 for n, p in trainable)
    drafts = generate_drafts(bundle, [StudyInput([make_image(5)])], min_new_tokens=3)
    assert drafts[0].n_tokens >= 3


def test_select_strategy_matches_cls_token(build_tiny):
    assert build_tiny(vision={"kind": "siglip"}).llava.config.vision_feature_select_strategy == "full"
    vit = build_tiny(vision={"kind": "vit"}).llava.config
    assert vit.vision_feature_select_strategy == "default"
    assert vit.vision_feature_layer == -1
    assert vit.image_seq_length == 16


def test_parts_live_where_transformers_5_puts_them(build_tiny):
    llava = build_tiny().llava
    assert type(llava).__name__ == "LlavaForConditionalGeneration"
    assert type(llava.model.vision_tower).__name__ == "ViTModel"
    assert type(llava.model.language_model).__name__ == "LlamaModel"
    assert isinstance(llava.model.multi_modal_projector.linear_1, torch.nn.Linear)


def test_build_is_reproducible_and_leaves_global_rng_alone(build_tiny):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_tiny(lora={"r": 0})
    after = torch.rand(1)
    b = build_tiny(lora={"r": 0})
    assert torch.equal(after, expected_next)
    for (na, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(pa, pb), na


def test_build_without_tokenizer_is_refused(tiny_cfg):
    with pytest.raises(ConfigError, match="tokenizer"):
        build_model(tiny_cfg())


def _plain_tokenizer(tmp_path):
    """A decoder's own tokenizer without <image> (as a pretrained decoder's would be)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["The heart is normal."] * 10, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize(("tower_kind", "tower_cls"), [("vit", "ViTModel"), ("clip", "CLIPVisionModel")])
def test_build_from_local_tower_and_decoder_dirs(tmp_path, tower_kind, tower_cls, tiny_cfg, make_image):
    import transformers

    from medvlm.build import build_vision_config
    from medvlm.tokenizer import build_tokenizer

    cfg0 = tiny_cfg(vision={"kind": tower_kind})
    tower = getattr(transformers, tower_cls)(build_vision_config(cfg0.vision, cfg0.image_size))
    tower.save_pretrained(tmp_path / "tower")
    plain = _plain_tokenizer(tmp_path)
    dec_cfg = transformers.LlamaConfig(
        vocab_size=len(plain),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        max_position_embeddings=512,
        bos_token_id=plain.bos_token_id,
        eos_token_id=plain.eos_token_id,
    )
    decoder = transformers.LlamaForCausalLM(dec_cfg)
    decoder.save_pretrained(tmp_path / "decoder")
    plain.save_pretrained(tmp_path / "decoder")

    cfg = tiny_cfg(
        vision={"kind": tower_kind, "path": str(tmp_path / "tower")},
        decoder={"path": str(tmp_path / "decoder")},
    )
    tok = build_tokenizer(cfg)
    assert len(tok) >= len(plain) + 1  # <image> (and a pad token) added
    bundle = build_model(cfg, tok)
    llava = bundle.llava
    for name, value in tower.state_dict().items():
        assert torch.equal(llava.model.vision_tower.state_dict()[name], value), name
    emb = llava.model.language_model.embed_tokens.weight
    assert emb.shape[0] == len(tok)
    assert torch.equal(emb[: len(plain)], decoder.model.embed_tokens.weight)
    down = llava.model.language_model.layers[1].mlp.down_proj  # not a LoRA target: a plain Linear
    assert torch.equal(down.weight, decoder.model.layers[1].mlp.down_proj.weight)
    assert torch.equal(llava.lm_head.weight[: len(plain)], decoder.lm_head.weight)
    drafts = generate_drafts(bundle, [StudyInput([make_image(1)])], min_new_tokens=2)
    assert drafts[0].n_tokens >= 2


def test_local_tower_with_other_patch_size_is_refused(tmp_path, tiny_cfg, tiny_tokenizer):
    import transformers

    from medvlm.build import build_vision_config

    cfg0 = tiny_cfg(image_size=32, vision={"patch_size": 16})
    transformers.ViTModel(build_vision_config(cfg0.vision, cfg0.image_size)).save_pretrained(tmp_path / "t")
    with pytest.raises(ConfigError, match="patch_size"):
        build_model(tiny_cfg(vision={"path": str(tmp_path / "t")}), tiny_tokenizer)


def test_build_from_existing_llava_checkpoint(tmp_path, build_tiny, tiny_cfg, make_image):
    src = build_tiny(lora={"r": 0})
    src.llava.save_pretrained(tmp_path / "llava")
    src.processor.save_pretrained(tmp_path / "llava")
    bundle = build_model(tiny_cfg(init_from=str(tmp_path / "llava"), lora={"r": 0}))
    batch = _training_batch(src, make_image)
    src.model.eval()
    bundle.model.eval()
    with torch.no_grad():
        assert torch.equal(src.model(**batch).logits, bundle.model(**batch).logits)
    assert bundle.family.name == "llava"  # loaded as a Hugging Face LLaVA folder, refused if any weight is missing
    # image_size is only the size images are read at: the checkpoint's processor decides the image tokens
    other = build_model(tiny_cfg(init_from=str(tmp_path / "llava"), image_size=64, lora={"r": 0}))
    assert other.config.image_size == 64
