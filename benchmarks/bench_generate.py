"""Benchmark: drafting one study at a time vs the batched path (left padding, KV cache), on CPU.

Prints ONE JSON object. Baseline: the same model and studies drafted one per `generate` call.
Both paths generate exactly `--new-tokens` tokens per study (min_new_tokens = max_new_tokens), so
they do the same work. The FLOP-bound limit uses this machine's measured fp32 matmul rate
(FACTS.md: ~170 GFLOP/s on 2 cores) and ~2 x decoder parameters FLOPs per generated token.

    .venv/bin/python benchmarks/bench_generate.py [--studies 32] [--batch 16] [--new-tokens 64] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from medvlm.build import build_model
from medvlm.config import GenerationSettings, ModelConfig
from medvlm.generate import StudyInput, generate_drafts
from medvlm.prompts import format_report
from medvlm.tokenizer import build_tokenizer

FP32_FLOPS = 170e9  # FACTS.md: fp32 matmul 2048x2048 on this CPU (2 cores)

CORPUS = [
    format_report("The heart is normal in size. The lungs are clear.", "No acute cardiopulmonary disease."),
    format_report("The heart is enlarged. Small left pleural effusion.", "Cardiomegaly with small effusion."),
    format_report("Right upper lobe consolidation. No pneumothorax.", "Right upper lobe pneumonia."),
]


def _config() -> ModelConfig:
    # "tiny-ish": big enough that matmuls dominate, small enough to run in a minute on 2 cores.
    return ModelConfig.from_dict(
        {
            "image_size": 64,
            "vision": {
                "kind": "siglip",
                "hidden_size": 64,
                "num_layers": 2,
                "num_heads": 2,
                "intermediate_size": 128,
                "patch_size": 16,
            },
            "decoder": {
                "kind": "llama",
                "hidden_size": 256,
                "num_layers": 4,
                "num_heads": 8,
                "num_kv_heads": 4,
                "intermediate_size": 688,
                "max_position_embeddings": 1024,
            },
            "lora": {"r": 0},
        }
    )


def _time(bundle, studies, settings, new_tokens) -> float:
    start = time.perf_counter()
    drafts = generate_drafts(bundle, studies, settings, min_new_tokens=new_tokens)
    elapsed = time.perf_counter() - start
    assert all(d.n_tokens == new_tokens for d in drafts), (
        "every study must generate the same number of tokens"
    )
    return elapsed


def build_prompt_len(bundle, study) -> int:
    """Prompt length (image tokens included) of one study."""
    from medvlm.generate import encode_studies

    return int(encode_studies(bundle, [study])[0]["input_ids"].numel())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    # One thread by default: on the 2 shared cores, 2 OpenMP threads slow down 10x whenever
    # another process runs, which would measure the neighbours rather than this code.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved runs per path; the fastest counts"
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _config()
    tokenizer = build_tokenizer(cfg, CORPUS * 10)
    bundle = build_model(cfg, tokenizer)
    rng = np.random.default_rng(args.seed)
    studies = [
        StudyInput(
            [rng.random((96, 80), dtype=np.float32) for _ in range(1 + i % 2)],
            indication="cough " * int(rng.integers(0, 6)),
        )
        for i in range(args.studies)
    ]
    single = GenerationSettings(max_new_tokens=args.new_tokens, batch_size=1)
    batched = GenerationSettings(max_new_tokens=args.new_tokens, batch_size=args.batch)
    _time(bundle, studies[:2], batched, args.new_tokens)  # warm-up (allocator, kernels)

    # Interleave the two paths and keep each one's fastest run: the 2 cores are shared, and the
    # minimum is the least disturbed estimate of what the code itself costs.
    singles, batches = [], []
    for _ in range(args.repeats):
        singles.append(_time(bundle, studies, single, args.new_tokens))
        batches.append(_time(bundle, studies, batched, args.new_tokens))
    t_single, t_batched = min(singles), min(batches)

    decoder = bundle.llava.model.language_model
    n_decoder = sum(p.numel() for p in decoder.parameters()) + bundle.llava.lm_head.weight.numel()
    flops_per_token = 2 * n_decoder
    tokens = args.studies * args.new_tokens
    # FACTS' rate is for both cores; scale it when fewer threads are used.
    flops = FP32_FLOPS * min(torch.get_num_threads(), 2) / 2
    bound_tokens_s = flops / flops_per_token
    result = {
        "benchmark": "bench_generate",
        "baseline": "one study per generate call (same model, same studies, same token count)",
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "studies": args.studies,
        "batch_size": args.batch,
        "new_tokens_per_study": args.new_tokens,
        "decoder_params": n_decoder,
        "total_params": sum(p.numel() for p in bundle.model.parameters()),
        "prompt_tokens_first_study": int(build_prompt_len(bundle, studies[0])),
        "single_studies_per_s": round(args.studies / t_single, 3),
        "batched_studies_per_s": round(args.studies / t_batched, 3),
        "single_tokens_per_s": round(tokens / t_single, 1),
        "batched_tokens_per_s": round(tokens / t_batched, 1),
        "speedup_batched_vs_single": round(t_single / t_batched, 2),
        "repeats": args.repeats,
        "single_seconds_all_runs": [round(t, 2) for t in singles],
        "batched_seconds_all_runs": [round(t, 2) for t in batches],
        "flop_bound_tokens_per_s": round(bound_tokens_s, 1),
        "batched_fraction_of_flop_bound": round(tokens / t_batched / bound_tokens_s, 4),
        "flop_model": "2 x (decoder + lm_head params) per generated token; prefill and vision tower excluded",
        "fp32_flops_assumed": flops,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
