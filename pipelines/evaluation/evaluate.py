"""Evaluate a checkpoint on a held-out split, next to the two baselines it must beat.

In one run: draft every study of the split with `medvlm.generate.generate_drafts`, score the drafts
(BLEU-1..4, ROUGE-L, clinical P/R/F1 micro + macro over CheXpert's 14 observations through the
labeler, a per-finding table), and score the baselines on the same studies: the most common
training report, and nearest-neighbour retrieval of a training report by the checkpoint's pooled
image embeddings (the vision tower of medvlm's own model; for a Hugging Face family, whose towers
take family-specific inputs, a downsampled view of the frontal image). Optional learned scorers (RadGraph F1, CheXbert F1, GREEN) run only when a user
supplies local weights (environment variables below); otherwise they are listed as skipped with
the reason. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medvlm.build import MedVLM
    from pipelines.training.datasets import StudyDataset

SUMMARY_COLUMNS = (
    "clinical_macro_f1",
    "clinical_macro_precision",
    "clinical_macro_recall",
    "clinical_micro_f1",
    "bleu_1",
    "bleu_4",
    "rouge_l",
)


# ---- optional scorers ------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionalScorer:
    """A learned report metric that runs only with user-supplied local weights."""

    name: str
    """Metric name (prefix of its summary keys)."""
    env_var: str
    """Environment variable holding the local weights path."""
    package: str
    """Python package of the scorer's reference implementation."""
    run: Callable[[str, Sequence[str], Sequence[str]], dict[str, float]]
    """`run(weights_path, predictions, references) -> {metric: value}`."""


def _run_radgraph(weights: str, preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    from radgraph import F1RadGraph  # optional: `pip install radgraph`

    scorer = F1RadGraph(reward_level="partial", model_path=weights)
    score = scorer(hyps=list(preds), refs=list(refs))[0]
    return {"radgraph_f1": float(score)}


def _run_chexbert(weights: str, preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    from f1chexbert import F1CheXbert  # optional: `pip install f1chexbert`

    scorer = F1CheXbert(model_path=weights)
    _, _, report, _ = scorer(hyps=list(preds), refs=list(refs))
    return {"chexbert_micro_f1": float(report["micro avg"]["f1-score"])}


def _run_green(weights: str, preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    from green_score import GREEN  # optional: `pip install green-score`

    scorer = GREEN(weights, output_dir=".")
    mean, *_ = scorer(refs=list(refs), hyps=list(preds))
    return {"green": float(mean)}


OPTIONAL_SCORERS: tuple[OptionalScorer, ...] = (
    OptionalScorer("radgraph", "MEDVLM_RADGRAPH_WEIGHTS", "radgraph", _run_radgraph),
    OptionalScorer("chexbert", "MEDVLM_CHEXBERT_WEIGHTS", "f1chexbert", _run_chexbert),
    OptionalScorer("green", "MEDVLM_GREEN_WEIGHTS", "green_score", _run_green),
)
"""The registry of optional scorers."""


def run_optional_scorers(
    predictions: Sequence[str], references: Sequence[str], scorers: Sequence[OptionalScorer] = OPTIONAL_SCORERS
) -> dict[str, dict[str, Any]]:
    """Run each optional scorer whose weights are configured; others are reported skipped with a reason.

    Returns:
        `{name: {"status": "ok", "scores": {...}}` or `{"status": "skipped", "reason": ...}}`.
    """
    import importlib.util

    out: dict[str, dict[str, Any]] = {}
    for s in scorers:
        weights = os.environ.get(s.env_var)
        if not weights:
            out[s.name] = {"status": "skipped", "reason": f"no local weights: set {s.env_var}"}
        elif not Path(weights).exists():
            out[s.name] = {"status": "skipped", "reason": f"{s.env_var} points to a missing path"}
        elif importlib.util.find_spec(s.package) is None:
            out[s.name] = {"status": "skipped", "reason": f"package {s.package!r} not installed"}
        else:
            try:
                out[s.name] = {"status": "ok", "scores": s.run(weights, predictions, references)}
            except Exception as exc:  # a third-party scorer must not sink the evaluation
                out[s.name] = {"status": "skipped", "reason": f"failed: {type(exc).__name__}"}
    return out


# ---- evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """Model and baseline scores on one split."""

    summary: dict[str, float]
    """The model's flat metric summary (`pipelines.evaluation.metrics.EvalResult.summary`)."""
    per_finding: list[dict]
    """The model's per-observation table."""
    baselines: dict[str, dict[str, float]]
    """`most_common` and `nearest_neighbour` summaries on the same studies."""
    baseline_per_finding: dict[str, list[dict]]
    """Per-observation tables of the baselines."""
    optional: dict[str, dict[str, Any]]
    """Optional scorers: scores or the reason they were skipped."""
    split: str
    """The evaluated split(s)."""
    n_studies: int
    """Studies evaluated."""
    examples: list[dict[str, str]]
    """A few (prediction, reference) pairs (synthetic phantom text only)."""
    finding: dict[str, Any] | None = None
    """Labelled image folders: the pneumonia finding's accuracy, sensitivity, specificity, ROC AUC
    (`pipelines.evaluation.image_folder`); None for other data folders."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN becomes null)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and math.isnan(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return clean(dataclasses.asdict(self))

    def to_markdown(self) -> str:
        """Model vs. baselines table, then the model's per-finding table."""
        from pipelines.evaluation.metrics import per_finding_markdown

        def fmt(x: float | None) -> str:
            return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

        rows = [("model", self.summary), *self.baselines.items()]
        lines = [
            f"Split `{self.split}`, {self.n_studies} studies.",
            "",
            "| system | " + " | ".join(SUMMARY_COLUMNS) + " |",
            "|---|" + "---:|" * len(SUMMARY_COLUMNS),
        ]
        lines += [f"| {name} | " + " | ".join(fmt(s.get(c)) for c in SUMMARY_COLUMNS) + " |" for name, s in rows]
        from pipelines.evaluation.image_folder import finding_lines

        lines += ["", *finding_lines(self.finding), "", "Per finding (model):", "", per_finding_markdown(self.per_finding)]
        skipped = [f"- {k}: {v.get('reason', v.get('scores'))}" for k, v in self.optional.items()]
        lines += ["Optional scorers:", "", *skipped, ""]
        return "\n".join(lines)


def _pixel_embeddings(dataset: StudyDataset, side: int = 16) -> Any:
    """(N, side*side) centred, unit vectors of each study's frontal view resized to `side` px."""
    import numpy as np

    from medvlm.processor import resize_float

    rows = np.stack([resize_float(dataset.images(i)[0], side).ravel() for i in range(len(dataset))])
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-8)  # (N, side*side)


def _embeddings(bundle: MedVLM, dataset: StudyDataset, batch_size: int = 32) -> Any:
    """(N, D) pooled, unit image embeddings of each study's frontal view, from the bundle's tower.

    A Hugging Face family's tower takes its processor's family-specific inputs (grids, tiles,
    aspect ratios): the baseline then retrieves by the downsampled frontal image instead.
    """
    import numpy as np
    import torch

    from medvlm.families import OWN
    from medvlm.retrieval import image_embeddings
    from pipelines.training.examples import pixel_values

    if bundle.family.name != OWN:
        return _pixel_embeddings(dataset)

    device = next(bundle.llava.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            frontal = [dataset.images(i)[0] for i in range(start, min(len(dataset), start + batch_size))]
            pv = pixel_values(frontal, bundle.config).to(device)
            out.append(image_embeddings(bundle, pv).cpu().numpy())
    return np.concatenate(out)


def evaluate_bundle(
    bundle: MedVLM,
    data_dir: str | Path,
    *,
    split: str = "val,test",
    train_split: str = "train",
    cache_dir: str | Path | None = None,
    max_studies: int | None = None,
    batch_size: int = 16,
) -> Evaluation:
    """Draft and score a split; score both baselines on the same studies.

    Args:
        bundle: a `MedVLM` (e.g. from `medvlm.checkpoint.load_checkpoint`).
        data_dir: data folder (DICOM + reports.jsonl).
        split: evaluated split(s), comma-separated.
        train_split: split(s) the baselines draw their reports from.
        cache_dir: image cache folder (`.npy`), or None.
        max_studies: evaluate at most this many studies (in file order).
        batch_size: studies per `generate` call.

    Returns:
        The `Evaluation`.

    Raises:
        pipelines.training.datasets.DatasetError: no reports.jsonl or an empty split.
    """
    from medvlm.generate import StudyInput, generate_drafts
    from medvlm.prompts import format_report
    from pipelines.evaluation.baselines import evaluate_baselines
    from pipelines.evaluation.metrics import evaluate_reports
    from pipelines.training.datasets import ImageCache, StudyDataset, load_records

    cfg = bundle.config
    cache = ImageCache(cfg.image_size, cache_dir)
    test = StudyDataset(load_records(data_dir, split)[:max_studies], cache, max_views=cfg.max_views)
    train = StudyDataset(load_records(data_dir, train_split), cache, max_views=cfg.max_views)
    settings = dataclasses.replace(cfg.generation, batch_size=batch_size)
    studies = [StudyInput(images=test.images(i)) for i in range(len(test))]
    drafts = generate_drafts(bundle, studies, settings)
    predictions = [format_report(d.findings, d.impression) for d in drafts]
    references = [test.report(i) for i in range(len(test))]
    result = evaluate_reports(predictions, references)
    from pipelines.evaluation.image_folder import finding_metrics

    finding = finding_metrics(bundle, data_dir, split, test, predictions)  # None unless records carry labels
    base = evaluate_baselines(
        [train.report(i) for i in range(len(train))],
        references,
        train_embeddings=_embeddings(bundle, train),
        test_embeddings=_embeddings(bundle, test),
    )
    return Evaluation(
        summary=result.summary,
        per_finding=result.per_finding,
        baselines={k: v.summary for k, v in base.items()},
        baseline_per_finding={k: v.per_finding for k, v in base.items()},
        optional=run_optional_scorers(predictions, references),
        split=split,
        n_studies=len(test),
        examples=[{"prediction": p, "reference": r} for p, r in list(zip(predictions, references, strict=True))[:3]],
        finding=finding,
    )


def write_evaluation(evaluation: Evaluation, out: str | Path) -> tuple[Path, Path]:
    """Write `eval.json` and `eval.md` into the folder `out`; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "eval.json", out / "eval.md"
    json_path.write_text(json.dumps(evaluation.to_dict(), indent=2), encoding="utf-8")
    md_path.write_text(evaluation.to_markdown(), encoding="utf-8")
    return json_path, md_path


def evaluate_checkpoint(
    model: str | Path,
    data_dir: str | Path,
    out: str | Path,
    *,
    split: str = "val,test",
    cache_dir: str | Path | None = None,
    max_studies: int | None = None,
    batch_size: int = 16,
    tracking_uri: str | None = None,
    trust_remote_code: bool = False,
    max_new_tokens: int | None = None,
    dtype: str | None = None,
) -> Evaluation:
    """Resolve `model` (medvlm checkpoint, Hugging Face folder or `models:/` URI), evaluate it, write eval.json/.md."""
    from pipelines.tracking.registry import load_model

    bundle = load_model(model, tracking_uri=tracking_uri, trust_remote_code=trust_remote_code, dtype=dtype)
    if max_new_tokens is not None:
        bundle.config = dataclasses.replace(bundle.config, generation=dataclasses.replace(
            bundle.config.generation, max_new_tokens=max_new_tokens))
    evaluation = evaluate_bundle(
        bundle, data_dir, split=split, cache_dir=cache_dir, max_studies=max_studies, batch_size=batch_size
    )
    write_evaluation(evaluation, out)
    return evaluation


def register_evaluated(model: str | Path, evaluation: Evaluation, *, trust_remote_code: bool = False,
                       tracking_uri: str | None = None) -> dict[str, Any]:
    """Register an evaluated model folder with its metrics and baselines, then run the release gate.

    Returns:
        ``{"version", "promoted", "reason"}``.
    """
    from pipelines.tracking.registry import promote_if_better, register_checkpoint

    metrics = {k: v for k, v in evaluation.summary.items() if v == v}  # drop NaN
    version = register_checkpoint(model, metrics, tracking_uri=tracking_uri, baselines=evaluation.baselines,
                                  trust_remote_code=trust_remote_code, tags={"evaluated_split": evaluation.split})
    decision = promote_if_better(version.version, tracking_uri=tracking_uri)
    return {"version": version.version, "promoted": decision.promoted, "reason": decision.reason}


def evaluate_command(model: str, data: str | Path, out: str | Path | None = None, *, trust_remote_code: bool = False,
                     register: bool = False, max_new_tokens: int | None = None,
                     max_studies: int | None = None, dtype: str | None = None) -> dict[str, Any]:
    """`medvlm evaluate --model M --data DIR [--out DIR] [--register]`: model vs. baselines on the held-out split.

    Args:
        model: a medvlm checkpoint, a Hugging Face folder of an allowed family, or an MLflow URI
            (`models:/medvlm@champion`).
        data: data folder (DICOM + reports.jsonl), or a labelled image folder (`NORMAL/`, `PNEUMONIA/`: its
            held-out children, with the pneumonia finding's scores; `pipelines.evaluation.image_folder`).
        out: where `eval.json` and `eval.md` go; default `<data>/eval` (an image folder: `var/eval/<name>`).
        trust_remote_code: allow a Hugging Face folder's own code.
        register: register the folder in MLflow with these metrics and baselines, then run the
            release gate (a model that does not beat both baselines never becomes champion).
        max_new_tokens: override of the model's token budget per report.
        max_studies: evaluate at most this many studies.
        dtype: "float32" | "bfloat16" weights (None: the checkpoint's own).

    Returns:
        `{"model": summary, "most_common": summary, "nearest_neighbour": summary, "n_studies": N,
        "split": ..., "optional": {...}, "eval_json": path, "eval_md": path}`, plus `"registry"`
        (version, promoted, reason) with `register`.

    Raises:
        pipelines.tracking.registry.RegistryError: `register` with a `models:/` URI (already registered).
    """
    from pipelines.evaluation.evaluate import evaluate_checkpoint
    from pipelines.tracking.registry import RegistryError

    if register and str(model).startswith("models:/"):
        raise RegistryError("--register takes a model folder; a models:/ URI is registered already")
    from pipelines.evaluation.image_folder import is_labelled_folder, prepare

    folder = is_labelled_folder(data)  # shared, often read-only: its eval goes under var/
    out = Path(out) if out is not None else Path("var/eval") / Path(data).name if folder else Path(data) / "eval"
    evaluation = evaluate_checkpoint(model, prepare(data, out), out, trust_remote_code=trust_remote_code,
                                     max_new_tokens=max_new_tokens, max_studies=max_studies, dtype=dtype)
    d = evaluation.to_dict()
    result = {
        "model": d["summary"],
        **d["baselines"],
        "n_studies": evaluation.n_studies,
        "split": evaluation.split,
        "optional": d["optional"],
        "finding": d["finding"],
        "eval_json": str(out / "eval.json"),
        "eval_md": str(out / "eval.md"),
    }
    if register:
        result["registry"] = register_evaluated(model, evaluation, trust_remote_code=trust_remote_code)
    return result
