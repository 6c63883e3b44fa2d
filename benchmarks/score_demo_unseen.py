"""Score a model on a whole phantom folder from a seed no training or tuning used, against both baselines.

Usage::

    medvlm phantoms --out /tmp/unseen --n 150 --seed 4242 --size 128
    python benchmarks/score_demo_unseen.py --model var/runs/demo/checkpoint --data /tmp/unseen \
        --train var/demo/phantoms [--out DIR]

`medvlm evaluate` scores a folder's own val+test split and draws the baselines' reports from that
folder's train split; here every study of `--data` is evaluated (all splits: the folder was never
trained on) and the baselines draw from the model's *training* studies (`--train`, its train split),
as they would in deployment. Prints one JSON object: model, most-common-report and nearest-neighbour
summaries (clinical macro/micro-F1, BLEU-4, ROUGE-L), a second nearest-neighbour baseline that retrieves by
the downsampled pixels (independent of the model's tower), the per-finding F1 of all four, and the model's
macro-F1 as a ratio to the nearest-neighbour baseline's and to the stronger of the two. Phantom text only: no patient data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

KEYS = ("clinical_macro_f1", "clinical_micro_f1", "bleu_4", "rouge_l")


def score(model: str, data: Path, train: Path, batch_size: int = 32) -> dict:
    """Draft every study of `data`, score it and both baselines (reports from `train`'s train split)."""
    from medvlm.generate import StudyInput, generate_drafts
    from medvlm.prompts import format_report
    from pipelines.evaluation.baselines import evaluate_baselines
    from pipelines.evaluation.evaluate import _embeddings, _pixel_embeddings
    from pipelines.evaluation.metrics import evaluate_reports
    from pipelines.tracking.registry import load_model
    from pipelines.training.datasets import ImageCache, StudyDataset, load_records

    t0 = time.perf_counter()
    bundle = load_model(model)
    cfg = bundle.config
    cache = ImageCache(cfg.image_size, None)
    test = StudyDataset(load_records(data), cache, max_views=cfg.max_views)  # every split
    pool = StudyDataset(load_records(train, "train"), cache, max_views=cfg.max_views)
    settings = dataclasses.replace(cfg.generation, batch_size=batch_size)
    drafts = generate_drafts(bundle, [StudyInput(images=test.images(i)) for i in range(len(test))], settings)
    predictions = [format_report(d.findings, d.impression) for d in drafts]
    references = [test.report(i) for i in range(len(test))]
    result = evaluate_reports(predictions, references)
    base = evaluate_baselines([pool.report(i) for i in range(len(pool))], references,
                              train_embeddings=_embeddings(bundle, pool), test_embeddings=_embeddings(bundle, test))
    # a second retrieval baseline that does not depend on this model's tower: the nearest training image by its
    # downsampled pixels (a tower trained for other ends can retrieve worse than the pixels themselves)
    pixels = evaluate_baselines([pool.report(i) for i in range(len(pool))], references,
                                train_embeddings=_pixel_embeddings(pool), test_embeddings=_pixel_embeddings(test))
    systems = {"model": result, **base, "nearest_neighbour_pixels": pixels["nearest_neighbour"]}

    def f1s(r) -> dict[str, float]:
        return {row["observation"]: round(row["f1"], 3) for row in r.per_finding if row["scored"]}

    out = {
        "n_studies": len(test),
        "head": bundle.head is not None,
        **{name: {k: round(r.summary[k], 3) for k in KEYS} for name, r in systems.items()},
        "per_finding_f1": {name: f1s(r) for name, r in systems.items()},
        "macro_f1_ratio_to_nearest_neighbour": round(
            result.summary["clinical_macro_f1"] / base["nearest_neighbour"].summary["clinical_macro_f1"], 2),
        "macro_f1_ratio_to_stronger_nearest_neighbour": round(result.summary["clinical_macro_f1"] / max(
            r.summary["clinical_macro_f1"] for r in (base["nearest_neighbour"], pixels["nearest_neighbour"])), 2),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint folder or models:/medvlm@champion")
    parser.add_argument("--data", type=Path, required=True, help="unseen phantom folder (all of it is scored)")
    parser.add_argument("--train", type=Path, required=True, help="the model's training data folder (baselines)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    out = score(args.model, args.data, args.train)
    text = json.dumps(out, indent=2)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
