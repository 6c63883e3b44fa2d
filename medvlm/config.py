"""Model configuration: frozen dataclasses, loaded from YAML with `key=value` overrides.

One `ModelConfig` describes the whole LLaVA-style model: vision tower -> projector -> decoder
(+ LoRA), the prompt wording, generation settings and the tokenizer. `build_model` turns it into
a Hugging Face `LlavaForConditionalGeneration`; the config itself never reaches inside modules.

A YAML file may hold the model config at the top level or under a `model:` key, so training
recipes can embed it::

    model:
      image_size: 64
      vision: {kind: siglip, patch_size: 8}
      decoder: {kind: qwen2, hidden_size: 64}
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from medvlm.errors import ConfigError

VISION_KINDS = ("vit", "siglip", "clip", "dinov2")
DECODER_KINDS = ("llama", "qwen2", "gemma", "phi3", "mistral")
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class VisionConfig:
    """The vision tower: a local Hugging Face checkpoint, or a tiny one built from the fields below."""

    kind: str = "vit"
    """Family of the tower: one of vit, siglip, clip, dinov2 (SigLIP has no CLS token)."""
    path: str | None = None
    """Local directory of a Hugging Face vision checkpoint (`save_pretrained` output). None: build from the spec."""
    hidden_size: int = 32
    """Width of the tower (from-scratch only)."""
    num_layers: int = 2
    """Number of transformer layers (from-scratch only)."""
    num_heads: int = 2
    """Attention heads (from-scratch only); must divide `hidden_size`."""
    intermediate_size: int = 64
    """MLP width (from-scratch only)."""
    patch_size: int = 8
    """Patch edge in pixels; `ModelConfig.image_size` must be a multiple of it."""
    feature_layer: int = -1
    """Hidden-state layer fed to the projector. LLaVA-1.5 uses -2 (the penultimate layer of a
    pretrained CLIP generalises better); -1 here because with a tiny 2-layer tower trained from
    scratch -2 would leave the last layer (and any LoRA on it) without gradient."""


@dataclass(frozen=True)
class ProjectorConfig:
    """The multimodal projector: LLaVA's 2-layer MLP (vision width -> decoder width -> decoder width)."""

    hidden_act: str = "gelu"
    """Activation between the two linear layers (LLaVA-1.5 uses gelu)."""
    bias: bool = True
    """Whether both linear layers have a bias."""


@dataclass(frozen=True)
class DecoderConfig:
    """The causal language model: a local Hugging Face checkpoint, or a tiny one built from the fields below."""

    kind: str = "llama"
    """Family: one of llama, qwen2, gemma, phi3, mistral."""
    path: str | None = None
    """Local directory of a Hugging Face causal LM checkpoint; its tokenizer is used too. None: from spec."""
    hidden_size: int = 64
    """Width of the decoder (from-scratch only)."""
    num_layers: int = 2
    """Number of decoder layers (from-scratch only)."""
    num_heads: int = 4
    """Attention heads (from-scratch only); must divide `hidden_size`."""
    num_kv_heads: int = 2
    """Key/value heads for grouped-query attention (from-scratch only); must divide `num_heads`."""
    intermediate_size: int = 128
    """MLP width (from-scratch only)."""
    max_position_embeddings: int = 2048
    """Longest sequence (image tokens + prompt + report) the decoder accepts (from-scratch only)."""
    tie_word_embeddings: bool | None = None
    """Share input embeddings and LM head; None keeps the family default (Gemma ties, Llama does not)."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters through `peft.LoraConfig`. r = 0 disables LoRA."""

    r: int = 8
    """Rank of the low-rank update; 0 means no adapter."""
    alpha: int = 16
    """Scaling numerator (update scaled by alpha / r); 2 x r is the usual starting point."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    """Module names adapted in the DECODER only (restricted by a regex on the language model path,
    because vision attention layers are also called q_proj/v_proj). Phi-3 uses `qkv_proj`."""
    vision_target_modules: tuple[str, ...] = ()
    """Module names adapted in the vision tower (domain adaptation); empty: the tower gets no adapter."""

    def __post_init__(self) -> None:
        # YAML gives lists; store tuples so the frozen config stays hashable.
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        object.__setattr__(self, "vision_target_modules", tuple(self.vision_target_modules))
        if self.r < 0:
            raise ConfigError(f"lora.r must be >= 0, got {self.r}")
        if self.r > 0 and not self.target_modules and not self.vision_target_modules:
            raise ConfigError(
                "lora.target_modules is empty while lora.r > 0: list decoder modules or set lora.r=0"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")

    @property
    def enabled(self) -> bool:
        """Whether an adapter is applied."""
        return self.r > 0


@dataclass(frozen=True)
class PromptConfig:
    """Wording of the prompts (rendered by the chat template in `medvlm.prompts`)."""

    system: str = (
        "You are a radiology assistant. Draft a chest radiograph report for a radiologist to review."
    )
    """System line of every conversation."""
    report_instruction: str = "Write the FINDINGS and IMPRESSION for this chest radiograph study."
    """User instruction that asks for a report."""
    vqa_system: str = "You are a radiology assistant. Answer questions about the chest radiograph briefly."
    """System line for visual question answering."""
    prior_report_max_chars: int = 1000
    """Prior report text is cut to this many characters to bound the prompt length."""
    indication_max_chars: int = 300
    """Indication text is cut to this many characters."""


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings for drafting and question answering."""

    max_new_tokens: int = 160
    """Token budget of one report."""
    num_beams: int = 1
    """1 = greedy; > 1 = beam search."""
    do_sample: bool = False
    """Sampling is off: drafts must be reproducible."""
    repetition_penalty: float = 1.0
    """> 1 discourages repeated tokens."""
    batch_size: int = 8
    """Studies drafted per `generate` call."""
    sentence_confidence: str = "mean"
    """How token log-probabilities become a sentence confidence: "mean" = exp(mean logprob)
    (geometric mean probability) or "min" = the least likely token's probability."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"generation.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_beams < 1:
            raise ConfigError(f"generation.num_beams must be >= 1, got {self.num_beams}")
        if self.batch_size < 1:
            raise ConfigError(f"generation.batch_size must be >= 1, got {self.batch_size}")
        if self.sentence_confidence not in ("mean", "min"):
            raise ConfigError(
                f"generation.sentence_confidence must be mean or min, got {self.sentence_confidence!r}"
            )


@dataclass(frozen=True)
class TokenizerSettings:
    """Tokenizer: the decoder's own when `decoder.path` is set, else a byte-level BPE trained on reports."""

    path: str | None = None
    """Local tokenizer directory overriding the decoder's; None: decoder's tokenizer or a trained one."""
    vocab_size: int = 1024
    """Vocabulary of the trained BPE (from-scratch decoders)."""
    max_length: int = 1024
    """Longest tokenised sequence (image tokens included); longer training examples are refused."""


@dataclass(frozen=True)
class ModelConfig:
    """The whole model. Build it with `medvlm.build.build_model(cfg, tokenizer)`."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    """Vision tower."""
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    """Projector between tower and decoder."""
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    """Language model."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA adapters."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """Prompt wording."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    """Decoding settings."""
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    """Tokenizer settings."""
    image_size: int = 32
    """Edge in pixels of the square image fed to the tower (the processor resizes to it)."""
    max_views: int = 3
    """Most images of one study (current study; a prior study may bring as many again)."""
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    """Per-channel normalisation mean applied to [0, 1] pixels (use the tower's own for pretrained towers)."""
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    """Per-channel normalisation std."""
    init_from: str | None = None
    """Local Hugging Face folder (model + processor) of a supported family (`medvlm.families`) to start
    from; overrides vision/decoder, and the context check uses its loaded config."""
    trust_remote_code: bool = False
    """Allow `init_from`'s own `*.py` model code (MAIRA-2, CheXagent); hashed and checked by `medvlm.loading`."""
    dtype: str = "float32"
    """Weights dtype: float32 or bfloat16 (never float16 on CPU: about 400x slower here)."""
    seed: int = 0
    """Seed of the weight initialisation (a forked RNG: the caller's global RNG is untouched)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))
        v, d = self.vision, self.decoder
        if v.kind not in VISION_KINDS:
            raise ConfigError(f"vision.kind must be one of {VISION_KINDS}, got {v.kind!r}")
        if d.kind not in DECODER_KINDS:
            raise ConfigError(f"decoder.kind must be one of {DECODER_KINDS}, got {d.kind!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        # With init_from the checkpoint defines tower, decoder and context: checked against the
        # loaded config instead (medvlm.loading.check_context), never against the fields below.
        scratch = self.init_from is None
        if self.image_size < 1 or (scratch and self.image_size % v.patch_size):
            raise ConfigError(
                f"image_size={self.image_size} is not a multiple of vision.patch_size={v.patch_size}: "
                "change image_size or vision.patch_size"
            )
        if scratch and v.path is None and v.hidden_size % v.num_heads:
            raise ConfigError(
                f"vision.hidden_size={v.hidden_size} is not divisible by vision.num_heads={v.num_heads}"
            )
        if scratch and d.path is None:
            if d.hidden_size % d.num_heads:
                raise ConfigError(
                    f"decoder.hidden_size={d.hidden_size} is not divisible by decoder.num_heads={d.num_heads}"
                )
            if d.num_heads % d.num_kv_heads:
                raise ConfigError(
                    f"decoder.num_heads={d.num_heads} is not divisible by decoder.num_kv_heads={d.num_kv_heads}"
                )
            # Two studies' worth of images (current + prior) plus some text must fit the context.
            needed = 2 * self.max_views * self.image_seq_length + 64
            if needed > d.max_position_embeddings:
                raise ConfigError(
                    f"{2 * self.max_views} images x {self.image_seq_length} tokens + 64 text tokens = {needed} "
                    f"> decoder.max_position_embeddings={d.max_position_embeddings}: raise it, or lower "
                    "image_size / max_views"
                )
        if self.max_views < 1:
            raise ConfigError(f"max_views must be >= 1, got {self.max_views}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ConfigError("image_mean and image_std must have 3 values (RGB)")

    @property
    def image_seq_length(self) -> int:
        """Image tokens per view: one per patch (the CLS token, when the tower has one, is dropped)."""
        return (self.image_size // self.vision.patch_size) ** 2

    # ---- (de)serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serialisable dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a nested dict; unknown keys raise `ConfigError` naming them."""
        return _from_dict(cls, data, prefix="")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> ModelConfig:
        """Load a YAML file (model config at top level or under `model:`), then apply overrides.

        Args:
            path: YAML file.
            overrides: dotted keys to values, e.g. `{"decoder.hidden_size": 64, "lora.r": 0}`
                (values given as strings are parsed as YAML scalars, as from a command line).

        Returns:
            The validated config.

        Raises:
            ConfigError: unknown key, bad value or failed cross-field check.
            FileNotFoundError: no such file.
        """
        import yaml

        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        if "model" in data and isinstance(data["model"], dict):
            data = data["model"]
        data = apply_overrides(data, overrides or {})
        return cls.from_dict(data)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `data` with dotted-key overrides applied (`"lora.r": "0"` sets data["lora"]["r"] = 0)."""
    import copy

    import yaml

    out = copy.deepcopy(data)
    for key, value in overrides.items():
        if isinstance(value, str):
            value = yaml.safe_load(value) if value != "" else value
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


def _from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'model'} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        sub = _SECTION_TYPES.get(name) if cls is ModelConfig else None
        kwargs[name] = _from_dict(sub, value, f"{prefix}{name}.") if sub is not None else value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # wrong value type deep in a dataclass
        raise ConfigError(f"{prefix or 'model'}: {exc}") from exc


_SECTION_TYPES: dict[str, type] = {
    "vision": VisionConfig,
    "projector": ProjectorConfig,
    "decoder": DecoderConfig,
    "lora": LoraSettings,
    "prompt": PromptConfig,
    "generation": GenerationSettings,
    "tokenizer": TokenizerSettings,
}
