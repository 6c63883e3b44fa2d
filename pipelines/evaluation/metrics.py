"""Report generation metrics: BLEU-1..4, ROUGE-L and clinical efficacy (CheXpert labels).

Clinical efficacy compares the labels of a generated report with the labels of its reference
report, observation by observation, over CheXpert's 14 observations:

* an observation counts as **positive** only when its label is ``"positive"``; ``"negative"``,
  ``"uncertain"`` and "not mentioned" all count as not positive (the strict convention; pass
  ``uncertain_as="positive"`` for the lenient one, where a hedged mention counts as a finding);
* per observation: TP / FP / FN over the reports, precision = TP / (TP + FP), recall = TP / (TP + FN),
  F1 their harmonic mean, each 0.0 where its denominator is 0 (scikit-learn's ``zero_division=0``);
* **micro** sums TP / FP / FN over all observations before dividing;
* **macro** averages per-observation precision / recall / F1 over the observations that occur
  (TP + FP + FN > 0: a reference positive or a predicted positive); observations absent from both
  sides are undefined and left out of the average, so a small evaluation set is not scored on
  findings it does not contain. When no observation occurs at all, micro and macro values are NaN
  (never 1.0): a release gate must not promote a model on an evaluation with nothing to find.

Texts are tokenised by a simple regex (lower-cased runs of letters and digits; punctuation is
dropped), because nltk's ``word_tokenize`` needs data downloads that are not reachable here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from medvlm.labeler import OBSERVATIONS
from pipelines.errors import PipelineError

CHEXPERT_OBSERVATIONS: tuple[str, ...] = OBSERVATIONS
"""CheXpert's 14 observations: ``medvlm.labeler.OBSERVATIONS`` (the single definition), re-exported."""

LABEL_VALUES = ("positive", "negative", "uncertain")
_TOKEN_RE = re.compile(r"[a-z0-9]+")


class MetricsError(PipelineError, ValueError):
    """Inputs to a metric are unusable (lengths differ, unknown label, labeler missing)."""


@dataclass(frozen=True)
class EvalResult:
    """The result of evaluating generated reports against references.

    Attributes:
        summary: flat ``{name: float}`` for MLflow: ``bleu_1`` .. ``bleu_4``, ``rouge_l``,
            ``clinical_{micro,macro}_{precision,recall,f1}``, ``n_reports``, ``n_observations_scored``.
        per_finding: one dict per observation (CheXpert order): ``observation``, ``support``
            (reference positives), ``predicted`` (predicted positives), ``tp``, ``fp``, ``fn``,
            ``precision``, ``recall``, ``f1``, ``scored`` (whether it enters the macro average).
    """

    summary: dict[str, float]
    per_finding: list[dict] = field(default_factory=list)

    def to_markdown(self) -> str:
        """The per-finding table as Markdown (for the model card and the MLflow artifact)."""
        return per_finding_markdown(self.per_finding)


def tokenize(text: str) -> list[str]:
    """Lower-case runs of letters and digits; punctuation and whitespace are dropped."""
    return _TOKEN_RE.findall(text.lower())


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise MetricsError(
            f"predictions and references differ in length: {len(predictions)} vs {len(references)}"
        )
    if not predictions:
        raise MetricsError("no reports to evaluate: predictions and references are empty")


def bleu_scores(predictions: Sequence[str], references: Sequence[str], max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..max_n with one reference per prediction.

    Args:
        predictions: generated reports, length N.
        references: reference reports, length N.
        max_n: the highest n-gram order.

    Returns:
        ``{"bleu_1": ..., ..., f"bleu_{max_n}": ...}`` in [0, 1]. Smoothing: nltk method1 (epsilon
        counts for empty higher-order matches), so short corpora do not score exactly 0.

    Raises:
        MetricsError: lengths differ or are 0.
    """
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    _check_pairs(predictions, references)
    hyps = [tokenize(p) for p in predictions]
    refs = [[tokenize(r)] for r in references]
    smooth = SmoothingFunction().method1
    out = {}
    for n in range(1, max_n + 1):
        weights = tuple([1.0 / n] * n)
        out[f"bleu_{n}"] = float(corpus_bleu(refs, hyps, weights=weights, smoothing_function=smooth))
    return out


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure over the pairs (``rouge_score``, no stemming).

    Raises:
        MetricsError: lengths differ or are 0.
    """
    from rouge_score import rouge_scorer

    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    total = 0.0
    for pred, ref in zip(predictions, references, strict=True):
        total += scorer.score(ref, pred)["rougeL"].fmeasure  # score(target, prediction)
    return total / len(predictions)


def _normalise_labels(
    labels: Mapping[str, object], observations: Sequence[str], where: str
) -> dict[str, str]:
    out = {}
    for obs, value in labels.items():
        if obs not in observations:
            raise MetricsError(f"{where}: unknown observation {obs!r}; expected one of CheXpert's 14 names")
        text = getattr(value, "value", value)  # accepts medvlm.labeler.Label or a plain string
        if not isinstance(text, str) or text.lower() not in LABEL_VALUES:
            raise MetricsError(f"{where}: label of {obs!r} must be one of {LABEL_VALUES}, got {text!r}")
        out[obs] = text.lower()
    return out


def _safe_div(num: float, den: float) -> float:
    return num / den if den else 0.0


def _f1(p: float, r: float) -> float:
    return _safe_div(2 * p * r, p + r)


def clinical_scores(
    pred_labels: Sequence[Mapping[str, object]],
    ref_labels: Sequence[Mapping[str, object]],
    *,
    uncertain_as: str = "negative",
    observations: Sequence[str] = CHEXPERT_OBSERVATIONS,
) -> tuple[dict[str, float], list[dict]]:
    """Clinical precision / recall / F1 of predicted labels against reference labels.

    Args:
        pred_labels: N dicts ``{observation: "positive" | "negative" | "uncertain"}`` (labels of the
            generated reports; ``Label`` objects with ``.value`` are accepted too).
        ref_labels: N such dicts for the reference reports.
        uncertain_as: ``"negative"`` (default, strict) or ``"positive"``: how an uncertain label counts.
        observations: the observations scored.

    Returns:
        ``(summary, per_finding)``: summary has ``clinical_{micro,macro}_{precision,recall,f1}`` and
        ``n_observations_scored``; per_finding as ``EvalResult.per_finding``.

    Raises:
        MetricsError: lengths differ or are 0, an unknown observation or label value,
            or a bad ``uncertain_as``.
    """
    if uncertain_as not in ("negative", "positive"):
        raise MetricsError(f"uncertain_as must be 'negative' or 'positive', got {uncertain_as!r}")
    if len(pred_labels) != len(ref_labels):
        raise MetricsError(
            f"pred_labels and ref_labels differ in length: {len(pred_labels)} vs {len(ref_labels)}"
        )
    if not pred_labels:
        raise MetricsError("no label sets to evaluate")
    positive = {"positive"} | ({"uncertain"} if uncertain_as == "positive" else set())
    counts = {obs: [0, 0, 0] for obs in observations}  # tp, fp, fn
    for i, (pred, ref) in enumerate(zip(pred_labels, ref_labels, strict=True)):
        p = _normalise_labels(pred, observations, f"pred_labels[{i}]")
        r = _normalise_labels(ref, observations, f"ref_labels[{i}]")
        for obs in observations:
            is_p, is_r = p.get(obs) in positive, r.get(obs) in positive
            counts[obs][0] += is_p and is_r
            counts[obs][1] += is_p and not is_r
            counts[obs][2] += is_r and not is_p
    per_finding = []
    for obs in observations:
        tp, fp, fn = counts[obs]
        prec, rec = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
        per_finding.append(
            {
                "observation": obs,
                "support": tp + fn,
                "predicted": tp + fp,
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "precision": prec,
                "recall": rec,
                "f1": _f1(prec, rec),
                "scored": tp + fp + fn > 0,
            }
        )
    scored = [row for row in per_finding if row["scored"]]
    nan = float("nan")
    if scored:
        tp = sum(row["tp"] for row in per_finding)
        fp = sum(row["fp"] for row in per_finding)
        fn = sum(row["fn"] for row in per_finding)
        micro_p, micro_r = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
        summary = {
            "clinical_micro_precision": micro_p,
            "clinical_micro_recall": micro_r,
            "clinical_micro_f1": _f1(micro_p, micro_r),
            "clinical_macro_precision": sum(row["precision"] for row in scored) / len(scored),
            "clinical_macro_recall": sum(row["recall"] for row in scored) / len(scored),
            "clinical_macro_f1": sum(row["f1"] for row in scored) / len(scored),
        }
    else:
        summary = {
            f"clinical_{avg}_{m}": nan for avg in ("micro", "macro") for m in ("precision", "recall", "f1")
        }
    summary["n_observations_scored"] = float(len(scored))
    return summary, per_finding


def labels_for_reports(texts: Sequence[str]) -> list[dict[str, str]]:
    """Label report texts with ``medvlm.labeler`` (imported here, on first use).

    Args:
        texts: report texts (findings and impression joined).

    Returns:
        One ``{observation: "positive" | "negative" | "uncertain"}`` per text; unmentioned
        observations are left out.

    Raises:
        MetricsError: the labeler module cannot be imported.
    """
    try:
        from medvlm import labeler
    except ImportError as exc:
        raise MetricsError(
            "clinical metrics need medvlm.labeler, which could not be imported; "
            "pass pred_labels/ref_labels explicitly"
        ) from exc
    return [{obs: label.value for obs, label in labeler.label_report(text).items()} for text in texts]


def evaluate_reports(
    predictions: Sequence[str],
    references: Sequence[str],
    pred_labels: Sequence[Mapping[str, object]] | None = None,
    ref_labels: Sequence[Mapping[str, object]] | None = None,
    *,
    uncertain_as: str = "negative",
) -> EvalResult:
    """Evaluate generated reports against reference reports with every metric.

    Args:
        predictions: generated reports, length N.
        references: reference reports, length N.
        pred_labels: labels of ``predictions`` (N dicts); labelled with ``medvlm.labeler`` when None.
        ref_labels: labels of ``references`` (N dicts); labelled with ``medvlm.labeler`` when None.
        uncertain_as: how an uncertain label counts, see ``clinical_scores``.

    Returns:
        An ``EvalResult`` with a flat float summary and the per-finding table.

    Raises:
        MetricsError: lengths differ or are 0, bad labels, or labels needed and no labeler.
    """
    _check_pairs(predictions, references)
    if pred_labels is None:
        pred_labels = labels_for_reports(predictions)
    if ref_labels is None:
        ref_labels = labels_for_reports(references)
    if len(pred_labels) != len(predictions):
        raise MetricsError(f"pred_labels has {len(pred_labels)} entries for {len(predictions)} predictions")
    summary: dict[str, float] = {}
    summary.update(bleu_scores(predictions, references))
    summary["rouge_l"] = rouge_l(predictions, references)
    clinical, per_finding = clinical_scores(pred_labels, ref_labels, uncertain_as=uncertain_as)
    summary.update(clinical)
    summary["n_reports"] = float(len(predictions))
    return EvalResult(summary=summary, per_finding=per_finding)


def _fmt(value: float) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.3f}"


def per_finding_markdown(per_finding: Sequence[Mapping[str, object]]) -> str:
    """A Markdown table: observation, support, precision, recall, F1 (unscored rows show '-')."""
    lines = ["| observation | support | precision | recall | F1 |", "|---|---:|---:|---:|---:|"]
    for row in per_finding:
        if row.get("scored", True):
            p, r, f = (_fmt(float(row[k])) for k in ("precision", "recall", "f1"))
        else:
            p = r = f = "-"
        lines.append(f"| {row['observation']} | {row['support']} | {p} | {r} | {f} |")
    return "\n".join(lines) + "\n"
