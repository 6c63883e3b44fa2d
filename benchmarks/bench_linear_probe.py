"""Benchmark: does the pretrained tower read real radiographs? Linear probe, pneumonia vs normal (Kermany).

Prints ONE JSON object (also written to `--out`). Frozen tower features -> logistic regression, on a
**child-level** split of the Kermany training images (`pipelines.training.image_folder.child_split`, the same
held-out children as `train_kermany.yaml`; byte-identical copies kept once), for these towers:

(a) `random`: the Kermany tower's architecture (`pretrain_kermany.yaml`'s model block) at its seeded init:
    **the named baseline**; every difference and ratio in the output is to it;
(b) `phantom`: the phantom-only tower of `make demo` (stage 0, contrastive on synthetic phantoms), read from
    `--phantom` (default `var/runs/demo/stage0_contrastive/vision_tower.safetensors`); when absent it is
    trained here with the demo's own stage-0 settings on freshly rendered phantoms (`--phantom-studies`), and
    the output says which (`phantom.source`). Its architecture and input size are the demo's (96 px);
(c) one row per `--tower NAME=FOLDER` (default: `mae`, `dino`, `simclr`, the outputs of `pretrain_kermany.yaml`,
    `pretrain_kermany_dino.yaml` and `pretrain_kermany_simclr.yaml` that exist; `towers_absent` lists the others):
    towers after `python -m pipelines.recipes.pretrain CONFIG` on the same Kermany images (labels unused).

Two regimes, on the same held-out children:

- `towers` (full labels): the probe trained on every training image (the original rows);
- `low_label`: the probe trained on the images of n labelled training **children** per draw, n in
  `--label-children` (default 20, 50, 200, all), half NORMAL and half PNEUMONIA children (a balanced draw),
  `--repeats` seeded draws (default 5), the same draws for every tower; mean and std of ROC AUC and accuracy, and
  the paired AUC difference to the random tower per draw. This is how self-supervised towers are compared when the
  full-label probe saturates: here raw pixels alone reach AUC ~0.99 with all 4,000 labels, so no tower can gain
  0.10 there.

Context row `pixels_16px`: the same probe on raw 16 x 16 pixels, no tower. On this data set it is strong
(AUC ~0.99 with all labels): pneumonia vs normal is close to linearly separable in the pixels themselves.

Features: the final hidden states of each image's tower input (as the model feeds it), pooled as
[CLS, mean over patches] (2D values), standardised on the probe's training images. They are cached under
`--work/features/` keyed by the tower's weights and the image list (a rerun with one more tower only computes its
features). The classifier is scikit-learn's L2 `LogisticRegression` (C=1) when scikit-learn is installed (exact,
lbfgs); otherwise the same objective by torch's LBFGS (scikit-learn is not a project dependency, torch always is).

    nice -n 15 .venv/bin/python benchmarks/bench_linear_probe.py [--max-images N] [--tower NAME=FOLDER ...]
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
DEFAULT_TOWERS = {
    "mae": "var/runs/kermany_pretrain/stage_pretrain/vision_tower",
    "dino": "var/runs/kermany_pretrain_dino/stage_pretrain/vision_tower",
    "simclr": "var/runs/kermany_pretrain_simclr/stage_pretrain/vision_tower",
}
"""The pretrained towers probed by default (`pretrain_kermany.yaml`, `_dino.yaml`, `_simclr.yaml` outputs), when present."""


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


def cached_features(tower, cfg: ModelConfig, paths: list[Path], work: Path) -> np.ndarray:
    """`features(...)`, cached in `work/features/` under a hash of the tower's weights, input size and images."""
    import hashlib

    h = hashlib.sha256(f"{cfg.image_size}|{cfg.image_mean}|{cfg.image_std}|".encode())
    for key, value in sorted(tower.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    h.update("\n".join(str(p) for p in paths).encode())
    cache = work / "features" / f"{h.hexdigest()[:24]}.npy"
    if cache.is_file():
        return np.load(cache)
    x = features(tower, cfg, paths)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, x)
    return x


def label_draws(train, n_children: int, repeats: int, seed: int = 0) -> list[np.ndarray]:
    """Per repeat, the training-image indices of n children, n/2 NORMAL and n/2 PNEUMONIA (seeded, no labels leak)."""
    by_class: dict[bool, list[str]] = {}
    for item in train:
        by_class.setdefault(item.label != NORMAL, [])
        if item.child not in by_class[item.label != NORMAL]:
            by_class[item.label != NORMAL].append(item.child)
    draws = []
    for r in range(repeats):
        rng = np.random.default_rng([seed, n_children, r])
        chosen = set()
        for positive in (False, True):
            children = sorted(by_class[positive])
            take = n_children // 2 + (n_children % 2 if positive else 0)
            if take > len(children):
                raise ValueError(f"{take} children of one class asked, {len(children)} available")
            chosen.update(children[i] for i in rng.permutation(len(children))[:take])
        draws.append(np.array([i for i, item in enumerate(train) if item.child in chosen]))
    return draws


def low_label_rows(feats: dict, y_train, y_val, draws: dict) -> dict:
    """`{regime: {tower: mean/std of AUC and accuracy over the draws, and the paired AUC gain over random}}`."""
    from pipelines.evaluation.image_folder import binary_scores, roc_auc

    out: dict = {}
    for regime, regime_draws in draws.items():
        aucs, accs = {}, {}
        for name, (x_train, x_val) in feats.items():
            aucs[name], accs[name] = [], []
            for idx in regime_draws:
                probs = logistic_probe(x_train[idx], y_train[idx], x_val)
                aucs[name].append(roc_auc(y_val, probs))
                accs[name].append(binary_scores(y_val, (probs >= 0.5).astype(int))["accuracy"])
        rows = {}
        for name in feats:
            gain = np.array(aucs[name]) - np.array(aucs["random"])  # paired: the same children for every tower
            rows[name] = {"roc_auc_mean": round(float(np.mean(aucs[name])), 4),
                          "roc_auc_std": round(float(np.std(aucs[name])), 4),
                          "accuracy_mean": round(float(np.mean(accs[name])), 4),
                          "accuracy_std": round(float(np.std(accs[name])), 4),
                          "auc_gain_over_random_mean": round(float(gain.mean()), 4),
                          "auc_gain_over_random_std": round(float(gain.std()), 4),
                          "auc_ratio_to_random": round(float(np.mean(aucs[name]) / np.mean(aucs["random"])), 4),
                          "roc_auc_per_draw": [round(a, 4) for a in aucs[name]]}
        out[regime] = {"train_images_mean": round(float(np.mean([len(i) for i in regime_draws])), 1),
                       "draws": len(regime_draws), "towers": rows}
    return out


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


def pixel_reference(train, val, y_train, y_val) -> tuple[dict, tuple]:
    """Context, not a tower: the same probe on the raw pixels of each image at 16 x 16 (256 values).

    Returns:
        (the full-label row, (train features, val features)).
    """
    from medvlm.processor import resize_float
    from pipelines.evaluation.image_folder import binary_scores, roc_auc
    from pipelines.training.datasets import ImageCache

    cache = ImageCache(128, None)

    def rows(items):
        return np.stack([resize_float(cache.get(i.path), 16).ravel() for i in items])

    x_train, x_val = rows(train), rows(val)
    probs = logistic_probe(x_train, y_train, x_val)
    return {**binary_scores(y_val, (probs >= 0.5).astype(int)), "roc_auc": roc_auc(y_val, probs),
            "image_size": 16, "feature_dim": 256, "source": "raw pixels, no tower (context for the towers)"}, \
        (x_train, x_val)


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
    parser.add_argument("--tower", action="append", metavar="NAME=FOLDER",
                        help="A pretrained tower folder (repeatable); default: DEFAULT_TOWERS that exist.")
    parser.add_argument("--phantom", default="var/runs/demo/stage0_contrastive/vision_tower.safetensors")
    parser.add_argument("--phantom-studies", type=int, default=800)
    parser.add_argument("--work", default="var/bench/linear_probe")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--max-images", type=int, default=None, help="Every k-th image so that about N remain.")
    parser.add_argument("--label-children", default="20,50,200,all",
                        help="Low-label regimes: labelled training children per draw (balanced), comma-separated.")
    parser.add_argument("--repeats", type=int, default=5, help="Seeded draws per low-label regime.")
    parser.add_argument("--out", default="var/bench/linear_probe.json")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the 2 cores are shared).")
    args = parser.parse_args(argv)
    if args.tower:
        pretrained, absent = dict(t.split("=", 1) for t in args.tower), {}
    else:  # the defaults: those the pretrain configs have produced here
        pretrained = {k: v for k, v in DEFAULT_TOWERS.items() if Path(v).is_dir()}
        absent = {k: v for k, v in DEFAULT_TOWERS.items() if k not in pretrained}

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
    for name, folder in pretrained.items():
        towers[name] = (_load_vision_tower(folder), kermany_cfg, f"loaded {folder}")

    pixels_row, pixel_feats = pixel_reference(train, val, y_train, y_val)
    results, feats = {"pixels_16px": pixels_row}, {"pixels_16px": pixel_feats}
    for name, (tower, cfg, source) in towers.items():
        t = time.perf_counter()
        x_train = cached_features(tower, cfg, [i.path for i in train], Path(args.work))
        x_val = cached_features(tower, cfg, [i.path for i in val], Path(args.work))
        feats[name] = (x_train, x_val)
        probs = logistic_probe(x_train, y_train, x_val)
        results[name] = {**binary_scores(y_val, (probs >= 0.5).astype(int)), "roc_auc": roc_auc(y_val, probs),
                         "image_size": cfg.image_size, "feature_dim": int(x_train.shape[1]), "source": source,
                         "seconds": round(time.perf_counter() - t, 1)}
    base = results["random"]
    regimes = [r.strip() for r in args.label_children.split(",") if r.strip()]
    draws = {r: ([np.arange(len(train))] if r == "all" else label_draws(train, int(r), args.repeats))
             for r in regimes}
    report = {
        "benchmark": "linear_probe_kermany_pneumonia",
        "baseline": "random",
        "classifier": "sklearn LogisticRegression(C=1)" if _has_sklearn() else "torch LBFGS logistic regression (L2)",
        "split": {"train_images": len(train), "train_children": len({i.child for i in train}),
                  "val_images": len(val), "val_children": len({i.child for i in val}),
                  "val_positive": int(y_val.sum()), "by": "child"},
        "towers": results,
        "auc_gain_over_random": {k: round(v["roc_auc"] - base["roc_auc"], 4) for k, v in results.items()},
        # AUC is capped at 1: the share of the random tower's ranking errors (1 - AUC) that a tower removes.
        "error_reduction_vs_random": {k: round(1 - (1 - v["roc_auc"]) / (1 - base["roc_auc"]), 4)
                                      for k, v in results.items()},
        "ratios_to_random": {k: {m: round(v[m] / base[m], 4) for m in ("accuracy", "roc_auc")} for k, v in results.items()},
        # n labelled children per draw (balanced), `repeats` draws; "all": every training image, one draw.
        "low_label": low_label_rows(feats, y_train, y_val, draws),
        "towers_absent": absent,
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
