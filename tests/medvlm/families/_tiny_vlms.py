"""Tiny random checkpoints of each supported vision-language family, built and saved locally (no hub).

Each builder returns (model, processor) whose `save_pretrained` output looks like a real checkpoint
of the family: the processor class, image processor, tokenizer with the family's special tokens,
and a chat template shaped like the real one (role markers, end-of-turn token). Sizes: 1 decoder
layer of width 32, a 1-layer tower, 32-64 px images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS = [
    "FINDINGS: The heart is normal in size. The lungs are clear.\nIMPRESSION: No acute disease.",
    "FINDINGS: Small left pleural effusion. The heart is enlarged.\nIMPRESSION: Cardiomegaly.",
    "Is there a pleural effusion? Yes. No. Indication: cough and fever. Current study: Prior study:",
    "You are a radiology assistant. Draft a chest radiograph report. Answer questions briefly.",
]
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "max_position_embeddings": 1024}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}


def chat_template(prefix: dict[str, str], suffix: dict[str, str], image: str, bos: str = "") -> str:
    """A Jinja chat template: per role a prefix and suffix around the content, images as `image`."""
    p, s = json.dumps(prefix), json.dumps(suffix)
    return (
        f"{{% set p = {p} %}}{{% set s = {s} %}}{bos}"
        "{% for m in messages %}{{ p[m['role']] }}"
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
        f"{{% if c['type'] == 'image' %}}{image}{{% else %}}{{{{ c['text'] }}}}{{% endif %}}"
        "{% endfor %}{% endif %}{{ s[m['role']] }}{% endfor %}"
        "{% if add_generation_prompt %}{{ p['assistant'] }}{% endif %}"
    )


def _roles(user: str, assistant: str, end: str, assistant_end: str | None = None) -> tuple[dict, dict]:
    prefix = {"system": user, "user": user, "assistant": assistant}
    return prefix, {"system": end, "user": end, "assistant": assistant_end if assistant_end is not None else end}


def tokenizer(bos: str, eos: str, pad: str, specials: list[str], extra: dict[str, str] | None = None) -> Any:
    """A byte-level BPE on a tiny corpus with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    names = list(dict.fromkeys([pad, bos, eos, *specials, *(extra or {}).values()]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=names, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   extra_special_tokens=extra or {})


def _text(cls: Any, tok: Any, **kw: Any) -> Any:
    base = {**TEXT, "vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id}
    return cls(**{**base, **kw})


def _llava_tok() -> Any:
    return tokenizer("<s>", "</s>", "<pad>", ["<image>", "<video>"], {"image_token": "<image>"})


def _clip() -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**VISION, image_size=32, patch_size=8)


def build_llava() -> tuple[Any, Any]:
    """LLaVA-1.5: CLIP tower, Llama decoder, "USER: ... ASSISTANT: ...</s>"."""
    from transformers import (
        CLIPImageProcessorPil,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = _llava_tok()
    tpl = chat_template(*_roles("USER: ", "ASSISTANT: ", "\n", "</s>"), "<image>", "<s>")
    ip = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=tpl)
    cfg = LlavaConfig(vision_config=_clip(), text_config=_text(LlamaConfig, tok), image_seq_length=16,
                      image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)
    return LlavaForConditionalGeneration(cfg), proc


def build_llava_next() -> tuple[Any, Any]:
    """LLaVA-Next (Mistral style): any-resolution tiles, "[INST] ... [/INST] ...</s>"."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        MistralConfig,
    )

    tok = _llava_tok()
    tpl = chat_template({"system": "[INST] ", "user": "[INST] ", "assistant": ""},
                        {"system": " [/INST]", "user": " [/INST]", "assistant": "</s>"}, "<image>\n", "<s>")
    grid = [[32, 32], [32, 64], [64, 32]]
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                    image_grid_pinpoints=grid)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                              num_additional_image_tokens=1, chat_template=tpl)
    cfg = LlavaNextConfig(vision_config=_clip(), text_config=_text(MistralConfig, tok), image_grid_pinpoints=grid,
                          image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)
    return LlavaNextForConditionalGeneration(cfg), proc


QWEN_TURNS = ({"system": "<|im_start|>system\n", "user": "<|im_start|>user\n", "assistant": "<|im_start|>assistant\n"},
              {"system": "<|im_end|>\n", "user": "<|im_end|>\n", "assistant": "<|im_end|>\n"})


def build_llava_onevision() -> tuple[Any, Any]:
    """LLaVA-OneVision: SigLIP tower, Qwen2 decoder, ChatML turns (a video-capable processor)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        Qwen2Config,
        SiglipVisionConfig,
    )

    tok = tokenizer("<|endoftext|>", "<|im_end|>", "<|endoftext|>", ["<image>", "<video>", "<|im_start|>"],
                    {"image_token": "<image>", "video_token": "<video>"})
    tpl = chat_template(*QWEN_TURNS, "<image>\n")
    grid = [[32, 32], [32, 64], [64, 32]]
    ip = LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32}, image_grid_pinpoints=grid)
    cfg = LlavaOnevisionConfig(vision_config=SiglipVisionConfig(**VISION, image_size=32, patch_size=8),
                               text_config=_text(Qwen2Config, tok), image_grid_pinpoints=grid,
                               image_token_index=tok.convert_tokens_to_ids("<image>"),
                               video_token_index=tok.convert_tokens_to_ids("<video>"), vision_feature_layer=-1)
    extra = {"num_image_tokens": 16, "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9"}
    return LlavaOnevisionForConditionalGeneration(cfg), VideoProcessorFiles("LlavaOnevisionProcessor", ip, tok, tpl,
                                                                             extra)


def build_gemma3() -> tuple[Any, Any]:
    """Gemma 3 (MedGemma): SigLIP tower, pooled to 4 tokens, "<start_of_turn>user ... <end_of_turn>"."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    extra = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = tokenizer("<bos>", "<eos>", "<pad>", ["<start_of_turn>", "<end_of_turn>"], extra)
    tpl = chat_template(*_roles("<start_of_turn>user\n", "<start_of_turn>model\n", "<end_of_turn>\n"),
                        "<start_of_image>", "<bos>")
    ip = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    proc = Gemma3Processor(image_processor=ip, tokenizer=tok, chat_template=tpl, image_seq_length=4)
    text = _text(Gemma3TextConfig, tok, head_dim=16, sliding_window=64)
    cfg = Gemma3Config(text_config=text, vision_config=SiglipVisionConfig(**VISION, image_size=32, patch_size=8),
                       mm_tokens_per_image=4, boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                       eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                       image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"))
    return Gemma3ForConditionalGeneration(cfg), proc


def _qwen(version: str) -> tuple[Any, Any]:
    import transformers as tf

    names = {"2": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
             "2.5": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor")}[version]
    specials = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = tokenizer("<|endoftext|>", "<|im_end|>", "<|endoftext|>", specials)
    tpl = chat_template(*QWEN_TURNS, "<|vision_start|><|image_pad|><|vision_end|>")
    ip = tf.Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                                     size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64})
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in (("image_token_id", "<|image_pad|>"),
           ("video_token_id", "<|video_pad|>"), ("vision_start_token_id", "<|vision_start|>"),
           ("vision_end_token_id", "<|vision_end|>"))}
    vision = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "patch_size": 8, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "in_channels": 3}
    if version == "2.5":
        vision.update(intermediate_size=64, out_hidden_size=32, fullatt_block_indexes=[0], window_size=16)
    else:
        vision.update(mlp_ratio=2)
    text = {**TEXT, "vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "rope_parameters": {"rope_type": "default", "mrope_section": [4, 2, 2],
                                                                "rope_theta": 10000.0}}
    cfg = getattr(tf, names[0])(text_config=text, vision_config=vision, **ids)
    model = getattr(tf, names[1])(cfg)
    return model, VideoProcessorFiles(names[2], ip, tok, tpl, {})


def build_qwen2_vl() -> tuple[Any, Any]:
    """Qwen2-VL: dynamic resolution (image_grid_thw), M-RoPE, ChatML turns (video-capable processor)."""
    return _qwen("2")


def build_qwen2_5_vl() -> tuple[Any, Any]:
    """Qwen2.5-VL (Lingshu): like Qwen2-VL with windowed attention and a gated MLP in the tower."""
    return _qwen("2.5")


IDEFICS_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
                  *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]]


def _idefics(kind: str) -> tuple[Any, Any]:
    import transformers as tf

    tok = tokenizer("<|begin_of_text|>", "<|end_of_text|>", "<|end_of_text|>", IDEFICS_TOKENS,
                    {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                     "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"})
    tpl = chat_template(*_roles("User:", "Assistant:", "<end_of_utterance>\n"), "<image>", "<|begin_of_text|>")
    # 64 px tiles of 8 px patches, pixel-shuffled by 2: 16 tokens per tile
    sizes = {"size": {"longest_edge": 64}, "max_image_size": {"longest_edge": 64}, "do_image_splitting": False}
    vision = {**VISION, "image_size": 64, "patch_size": 8}
    if kind == "idefics3":
        ip = tf.Idefics3ImageProcessorPil(**sizes)
        cfg = tf.Idefics3Config(vision_config=vision, text_config=_text(tf.LlamaConfig, tok), scale_factor=2,
                                image_token_id=tok.convert_tokens_to_ids("<image>"))
        proc = tf.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=16, chat_template=tpl)
        return tf.Idefics3ForConditionalGeneration(cfg), proc
    ip = tf.SmolVLMImageProcessorPil(**sizes)
    cfg = tf.SmolVLMConfig(vision_config=vision, text_config=_text(tf.LlamaConfig, tok), scale_factor=2,
                           image_token_id=tok.convert_tokens_to_ids("<image>"))
    return tf.SmolVLMForConditionalGeneration(cfg), VideoProcessorFiles("SmolVLMProcessor", ip, tok, tpl,
                                                                        {"image_seq_len": 16})


def build_idefics3() -> tuple[Any, Any]:
    """Idefics3: SigLIP-like tower, pixel-shuffle connector, "User:... <end_of_utterance>"."""
    return _idefics("idefics3")


def build_smolvlm() -> tuple[Any, Any]:
    """SmolVLM: Idefics3's architecture under its own model_type (video-capable processor)."""
    return _idefics("smolvlm")


def build_paligemma() -> tuple[Any, Any]:
    """PaliGemma: SigLIP + Gemma, prefix-LM, no chat template; the processor grows the tokenizer."""
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
    )

    tok = tokenizer("<bos>", "<eos>", "<pad>", [])
    ip = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    ip.image_seq_length = 16
    proc = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)  # adds <image>, <locNNNN>, <segNNN>
    text = _text(GemmaConfig, tok, head_dim=16)
    cfg = PaliGemmaConfig(text_config=text, vision_config=SiglipVisionConfig(**VISION, image_size=32, patch_size=8),
                          image_token_index=tok.convert_tokens_to_ids("<image>"), projection_dim=32)
    return PaliGemmaForConditionalGeneration(cfg), proc


def build_mllama() -> tuple[Any, Any]:
    """Llama 3.2 Vision: tiled tower, cross-attention decoder layers, Llama 3 header turns."""
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessorPil,
        MllamaProcessor,
        MllamaTextConfig,
        MllamaVisionConfig,
    )

    tok = tokenizer("<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>",
                    ["<|image|>", "<|python_tag|>", "<|start_header_id|>", "<|end_header_id|>"])
    head = "<|start_header_id|>{}<|end_header_id|>\n\n"
    tpl = chat_template({r: head.format(r) for r in ("system", "user", "assistant")},
                        {r: "<|eot_id|>" for r in ("system", "user", "assistant")}, "<|image|>", "<|begin_of_text|>")
    ip = MllamaImageProcessorPil(size={"height": 32, "width": 32}, max_image_tiles=2)
    proc = MllamaProcessor(image_processor=ip, tokenizer=tok, chat_template=tpl)
    vision = MllamaVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_global_layers=1,
                                attention_heads=2, image_size=32, patch_size=8, max_num_tiles=2,
                                vision_output_dim=64, intermediate_layers_indices=[0],
                                supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]])
    text = _text(MllamaTextConfig, tok, num_hidden_layers=2, cross_attention_layers=[1])
    cfg = MllamaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    return MllamaForConditionalGeneration(cfg), proc


class VideoProcessorFiles:
    """Stands in for a video-capable processor (which needs torchvision here) when saving a checkpoint.

    Writes what the real processor's `save_pretrained` writes for images and text (image processor,
    tokenizer, chat template) and a `processor_config.json` naming the real processor class.
    """

    def __init__(self, processor_class: str, image_processor: Any, tok: Any, template: str, extra: dict) -> None:
        self.processor_class, self.image_processor, self.tokenizer = processor_class, image_processor, tok
        self.template, self.extra = template, extra

    def save_pretrained(self, directory: Path) -> None:
        directory = Path(directory)
        self.image_processor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        (directory / "chat_template.jinja").write_text(self.template, encoding="utf-8")
        config = {"processor_class": self.processor_class, **self.extra}
        (directory / "processor_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


BUILDERS = {
    "llava": build_llava, "llava_next": build_llava_next, "llava_onevision": build_llava_onevision,
    "gemma3": build_gemma3, "qwen2_vl": build_qwen2_vl, "qwen2_5_vl": build_qwen2_5_vl, "idefics3": build_idefics3,
    "smolvlm": build_smolvlm, "paligemma": build_paligemma, "mllama": build_mllama,
}


def save_tiny(family: str, directory: Path) -> Path:
    """Build the family's tiny model + processor (seed 0) and `save_pretrained` both into `directory`."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, proc = BUILDERS[family]()
    model.save_pretrained(directory)
    proc.save_pretrained(directory)
    return directory
