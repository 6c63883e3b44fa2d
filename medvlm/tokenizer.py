"""Tokenizers: the decoder's own for pretrained decoders, a byte-level BPE trained on reports otherwise.

Either way the tokenizer knows the `<image>` placeholder (one per image feature after the
processor expands it) and has a pad token; it is saved with the checkpoint by the processor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from medvlm.config import ModelConfig
from medvlm.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
# Role markers of the chat template (see medvlm.prompts). Special tokens in a trained tokenizer;
# plain text for a pretrained decoder, whose embeddings for new tokens would be untrained.
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IMAGE_TOKEN, *ROLE_TOKENS)


def train_report_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on report texts (for a decoder trained from scratch).

    Byte-level means any text encodes (no unknown token), including words the corpus never had.

    Args:
        texts: report texts (findings, impressions, questions, answers).
        vocab_size: target vocabulary size, special tokens included.

    Returns:
        A `PreTrainedTokenizerFast` with pad/bos/eos, `image_token` and the role markers.

    Raises:
        ConfigError: `vocab_size` too small to hold the byte alphabet and special tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(SPECIAL_TOKENS):
        raise ConfigError(
            f"tokenizer.vocab_size={vocab_size} < {len(alphabet) + len(SPECIAL_TOKENS)} "
            "(256 bytes + special tokens): raise tokenizer.vocab_size"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator((t for t in texts if t), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",  # generation pads on the left; training collation pads explicitly
    )


def load_pretrained_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """Load a decoder's own tokenizer from a local directory and add `<image>` (and a pad token if missing).

    Args:
        path: local tokenizer directory (never a hub id here: nothing is downloaded).

    Returns:
        The tokenizer; the caller resizes the decoder embeddings to `len(tokenizer)`.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    specials: dict = {}
    if IMAGE_TOKEN not in tok.get_vocab():
        specials["extra_special_tokens"] = [IMAGE_TOKEN]
    if tok.pad_token is None:
        specials["pad_token"] = PAD_TOKEN
    if specials:
        tok.add_special_tokens(specials, replace_extra_special_tokens=False)
    tok.padding_side = "left"
    return tok


def build_tokenizer(cfg: ModelConfig, texts: Iterable[str] | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer a config asks for.

    Args:
        cfg: model config; `tokenizer.path` or `decoder.path` selects a pretrained tokenizer.
        texts: report corpus, needed only to train a BPE for a from-scratch decoder.

    Returns:
        A tokenizer with `<image>` and a pad token.

    Raises:
        ConfigError: a from-scratch decoder and no `texts` to train on.
    """
    path = cfg.tokenizer.path or cfg.decoder.path
    if path is not None:
        return load_pretrained_tokenizer(path)
    if texts is None:
        raise ConfigError(
            "decoder.path is unset (decoder from scratch): pass report texts to train a tokenizer, "
            "or set tokenizer.path"
        )
    # The fixed prompt wording is in every sequence: train on it too so it costs few tokens.
    p = cfg.prompt
    fixed = [
        p.system,
        p.report_instruction,
        p.vqa_system,
        "Current study: Prior study: Prior report: Indication:",
    ]
    return train_report_tokenizer([*texts, *(fixed * 20)], cfg.tokenizer.vocab_size)


def image_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Id of the `<image>` placeholder token."""
    ids = tokenizer.convert_tokens_to_ids([IMAGE_TOKEN])
    if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
        raise ConfigError(
            f"tokenizer has no {IMAGE_TOKEN} token: build it with medvlm.tokenizer.build_tokenizer"
        )
    return int(ids[0])


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end an answer: eos and, when it is one token, the end-of-turn marker."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    end = tokenizer.convert_tokens_to_ids(["<|end|>"])[0]
    if end is not None and end != tokenizer.unk_token_id and end not in ids:
        ids.append(int(end))
    return ids
