"""Benchmark: does the pretrained tower read real radiographs? Linear probe, pneumonia vs normal (Kermany).

Prints ONE JSON object (also written to `--out`). Frozen tower features -> logistic regression, on a
**child-level** split of the Kermany training images (`pipelines.training.image_folder.child_split`, the same
held-out children as `train_kermany.yaml`; byte-identical copies kept once), for three towers:

(a) `random`: the Kermany tower's architecture (`pretrain_kermany.yaml`'s model block) at its seeded init:
    **the named baseline**; every ratio in the output is to it;
(b) `phantom`: the phantom-only tower of `make demo` (stage 0, contrastive on synthetic phantoms), read from
    `--phantom` (default `var/runs/demo/stage0_contrastive/vision_tower.safetensors`); when absent it is
    trained here with the demo's own stage-0 settings on freshly rendered phantoms (`--phantom-studies`), and
    the output says which (`phantom.source`). Its architecture and input size are the demo's (96 px);
(c) `pretrained`: the tower after `python -m pipelines.recipes.pretrain pipelines/configs/pretrain_kermany.yaml`
    (MAE on the same Kermany images, labels unused), `--pretrained` folder.

Context row `pixels_16px`: the same probe on raw 16 x 16 pixels, no tower. On this data set it is strong
(AUC ~0.99 on a third of the images): pneumonia vs normal is close to linearly separable in the pixels
themselves, so a frozen tower can at best keep that information, and the random tower already reaches ~0.95.

Features: the final hidden states of each image's tower input (as the model feeds it), pooled as
[CLS, mean over patches] (2D values), standardised on the training children. The classifier is scikit-learn's
L2 `LogisticRegression` (C=1) when scikit-learn is installed (exact, lbfgs); otherwise the same objective by
torch's LBFGS (scikit-learn is not a project dependency, torch always is).

    nice -n 19 .venv/bin/python benchmarks/bench_linear_probe.py [--max-images N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medvlm.config import ModelConfig  # noqa: E402
from pipelines.training.image_folder import NORMAL, child_split, scan_labelled_folder  # noqa: E402

DEMO_YAML = ROOT / "pipelines/configs/train_demo.yaml"
PRETRAIN_YAML = ROOT / "pipelines/configs/pretrain_kermany.yaml"


def model_block(yaml_path: Path) -> ModelConfig:
    """The `model:` block of a recipe YAML."""
    import yaml

    return ModelConfig.from_dict(yaml.safe_load(yaml_path.read_text(encoding="utf-8"))["model"])


def features(tower, cfg: ModelConfig, paths: list[Path], batch: int = 64) -> np.ndarray:
    """(N, 2D) [CLS, mean over patches] of the tower's last hidden states, images as the model reads them."""
    import torch

    from pipelines.training.datasets import ImageCache
    from pipelines.training.examples import pixel_values

    cache = ImageCache(cfg.image_size, None)
    tower.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            pv = pixel_values([cache.get(p) for p in paths[start : start + batch]], cfg)
            hidden = tower(pixel_values=pv).last_hidden_state  # (B, 1 + patches, D)
            out.append(torch.cat([hidden[:, 0], hidden[:, 1:].mean(1)], -1).numpy())
    return np.concatenate(out)


def logistic_probe(x_train, y_train, x_val) -> np.ndarray:
    """P(positive) of the validation rows from an L2 logistic regression (C=1) on standardised features."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:  # not a project dependency: the same objective with torch's LBFGS
        import torch

        xt, yt = torch.from_numpy(x_train).double(), torch.from_numpy(y_train).double()
        w = torch.zeros(xt.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt, reduction="sum") + 0.5 * (w @ w)
            loss.backward()
            return loss

        opt.step(closure)
        return torch.sigmoid(torch.from_numpy(x_val).double() @ w + b).detach().numpy()
    clf = LogisticRegression(C=1.0, max_iter=5000).fit(x_train, y_train)
    return clf.predict_proba(x_val)[:, 1]


def pixel_reference(train, val, y_train, y_val) -> dict:
    """Context, not a tower: the same probe on the raw pixels of each image at 16 x 16 (256 values)."""
    from medvlm.processor import resize_float
    from pipelines.evaluation.image_folder import binary_scores, roc_auc
    from pipelines.training.datasets import ImageCache

    cache = ImageCache(128, None)

    def rows(items):
        return np.stack([resize_float(cache.get(i.path), 16).ravel() for i in items])

    probs = logistic_probe(rows(train), y_train, rows(val))
    return {**binary_scores(y_val, (probs >= 0.5).astype(int)), "roc_auc": roc_auc(y_val, probs),
            "image_size": 16, "feature_dim": 256, "source": "raw pixels, no tower (context for the towers)"}


def phantom_tower(path: Path | None, work: Path, studies: int):
    """(tower, its ModelConfig, source): the demo's stage-0 tower from `path`, or trained here on phantoms."""
    from safetensors.torch import load_file

    from pipelines.recipes.contrastive import build_tower

    cfg = model_block(DEMO_YAML)
    source = f"loaded {path}"
    if path is None or not path.is_file():
        from pipelines.phantoms import PhantomConfig, generate_phantoms
        from pipelines.recipes import contrastive

        data, run = work / "phantoms", work / "phantom_run"
        if not (data / "reports.jsonl").is_file():
            generate_phantoms(data, n=studies, seed=0, progress=False, config=PhantomConfig(size=128))
        contrastive.main([str(DEMO_YAML), f"data.dir={data}", f"out_dir={run}", "tracking=none",
                          f"data.cache_dir={work / 'cache'}", "register=false"])
        path = run / "stage0_contrastive" / "vision_tower.safetensors"
        source = f"trained here: demo stage 0 ({DEMO_YAML.name} settings) on {studies} fresh phantom studies"
    tower, _ = build_tower(cfg)
    tower.load_state_dict(load_file(str(path)), strict=True)
    return tower, cfg, source


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/kermany"))
    parser.add_argument("--pretrained", default="var/runs/kermany_pretrain/stage_pretrain/vision_tower")
    parser.add_argument("--phantom", default="var/runs/demo/stage0_contrastive/vision_tower.safetensors")
    parser.add_argument("--phantom-studies", type=int, default=800)
    parser.add_argument("--work", default="var/bench/linear_probe")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--max-images", type=int, default=None, help="Every k-th image so that about N remain.")
    parser.add_argument("--out", default="var/bench/linear_probe.json")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2 cores are shared).")
    args = parser.parse_args(argv)

    import torch

    from medvlm.build import _load_vision_tower
    from pipelines.evaluation.image_folder import binary_scores, roc_auc
    from pipelines.recipes.contrastive import build_tower

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    items = scan_labelled_folder(args.data)
    if args.max_images:
        items = items[:: max(1, len(items) // args.max_images)]
    split = child_split(items, args.val_fraction, seed=0)
    train = [i for i in items if split[i.child] == "train"]
    val = [i for i in items if split[i.child] == "val"]
    assert not {i.child for i in train} & {i.child for i in val}  # no child on both sides
    y_train = np.array([int(i.label != NORMAL) for i in train])
    y_val = np.array([int(i.label != NORMAL) for i in val])

    kermany_cfg = model_block(PRETRAIN_YAML)
    towers = {"random": (build_tower(kermany_cfg)[0], kermany_cfg, "seeded init of pretrain_kermany.yaml's tower")}
    phantom_path = Path(args.phantom) if args.phantom else None
    towers["phantom"] = phantom_tower(phantom_path, Path(args.work), args.phantom_studies)
    towers["pretrained"] = (_load_vision_tower(args.pretrained), kermany_cfg, f"loaded {args.pretrained}")

    results = {"pixels_16px": pixel_reference(train, val, y_train, y_val)}
    for name, (tower, cfg, source) in towers.items():
        t = time.perf_counter()
        x_train = features(tower, cfg, [i.path for i in train])
        x_val = features(tower, cfg, [i.path for i in val])
        probs = logistic_probe(x_train, y_train, x_val)
        results[name] = {**binary_scores(y_val, (probs >= 0.5).astype(int)), "roc_auc": roc_auc(y_val, probs),
                         "image_size": cfg.image_size, "feature_dim": int(x_train.shape[1]), "source": source,
                         "seconds": round(time.perf_counter() - t, 1)}
    base = results["random"]
    report = {
        "benchmark": "linear_probe_kermany_pneumonia",
        "baseline": "random",
        "classifier": "sklearn LogisticRegression(C=1)" if _has_sklearn() else "torch LBFGS logistic regression (L2)",
        "split": {"train_images": len(train), "val_images": len(val), "val_children": len({i.child for i in val}),
                  "val_positive": int(y_val.sum()), "by": "child"},
        "towers": results,
        "auc_gain_over_random": {k: round(v["roc_auc"] - base["roc_auc"], 4) for k, v in results.items()},
        # AUC is capped at 1: the share of the random tower's ranking errors (1 - AUC) that a tower removes.
        "error_reduction_vs_random": {k: round(1 - (1 - v["roc_auc"]) / (1 - base["roc_auc"]), 4)
                                      for k, v in results.items()},
        "ratios_to_random": {k: {m: round(v[m] / base[m], 4) for m in ("accuracy", "roc_auc")} for k, v in results.items()},
        "wall_s": round(time.perf_counter() - t0, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report))
    return report


def _has_sklearn() -> bool:
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


if __name__ == "__main__":
    main()
