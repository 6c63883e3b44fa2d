"""Model cards rendered from ``compliance/model_card_template.md`` with ``string.Template``.

The card is logged as ``model_card.md`` in the run (``pipelines.tracking.tracker.log_model_card``), so it
is checked for PHI like every artifact; it holds only hashes, counts and metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any

from pipelines.evaluation.metrics import per_finding_markdown

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "compliance" / "model_card_template.md"

PHANTOM_BANNER = (
    "> **NOT FOR CLINICAL USE.** This model was trained on synthetic phantom studies only. It "
    "demonstrates the pipeline; its reports say nothing about real patients. Point the pipeline at "
    "a checkpoint trained and validated on real data before any other use."
)
RESEARCH_BANNER = (
    "> **Research use only.** This model is not a cleared medical device; every draft needs a "
    "radiologist's review and signature."
)
_PHANTOM_SOURCES = {"phantom", "phantoms", "synthetic", "synthetic_phantoms"}
_METRIC_ORDER = (
    "clinical_macro_f1",
    "clinical_macro_precision",
    "clinical_macro_recall",
    "clinical_micro_f1",
    "clinical_micro_precision",
    "clinical_micro_recall",
    "bleu_1",
    "bleu_2",
    "bleu_3",
    "bleu_4",
    "rouge_l",
)


def trained_on_phantoms(run_info: Mapping[str, Any], data_manifest: Mapping[str, Any]) -> bool:
    """Whether the card must carry the phantom banner.

    True when ``run_info["trained_on_phantoms"]`` is true, ``data_manifest["synthetic"]`` is true,
    or ``data_manifest["source"]`` names phantoms / synthetic data.
    """
    source = str(data_manifest.get("source", "")).strip().lower()
    return bool(
        run_info.get("trained_on_phantoms") or data_manifest.get("synthetic") or source in _PHANTOM_SOURCES
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    if not metrics:
        return "_No evaluation was recorded._"
    keys = [k for k in _METRIC_ORDER if k in metrics] + sorted(k for k in metrics if k not in _METRIC_ORDER)
    rows = ["| metric | value |", "|---|---:|"] + [f"| {k} | {_fmt(metrics[k])} |" for k in keys]
    return "\n".join(rows)


def render_model_card(
    run_info: Mapping[str, Any],
    metrics: Mapping[str, Any],
    data_manifest: Mapping[str, Any],
    intended_use: str,
    limitations: Sequence[str],
    *,
    per_finding: Sequence[Mapping[str, Any]] | None = None,
    template_path: str | Path = TEMPLATE_PATH,
) -> str:
    """Render the Markdown model card.

    Args:
        run_info: ``model_name``, ``model_version``, ``run_id``, ``git_commit``, ``git_dirty``,
            ``created``, ``architecture``, ``adapter_hash``, ``license``, ``trained_on_phantoms``
            (all optional; missing ones read "unknown").
        metrics: the evaluation summary (``EvalResult.summary``).
        data_manifest: ``hash``, ``source`` (e.g. ``"phantoms"``), ``counts`` (mapping split -> n),
            ``description``, ``synthetic`` (all optional). Never records or patient data.
        intended_use: a paragraph.
        limitations: one sentence per item.
        per_finding: ``EvalResult.per_finding`` for the per-finding table.
        template_path: the template (``$name`` placeholders).

    Returns:
        The card as Markdown.

    Raises:
        KeyError: the template has a placeholder this function does not fill.
    """

    def info(key: str, default: str = "unknown") -> str:
        value = run_info.get(key)
        return default if value in (None, "") else str(value)

    counts = data_manifest.get("counts")
    if isinstance(counts, Mapping) and counts:
        counts_text = ", ".join(f"{k}: {v}" for k, v in counts.items())
    else:
        counts_text = str(counts) if counts not in (None, "") else "unknown"
    values = {
        "model_name": info("model_name", "medvlm"),
        "model_version": info("model_version", "(unregistered)"),
        "architecture": info(
            "architecture", "LLaVA-style: ViT vision tower, 2-layer MLP projector, LoRA decoder"
        ),
        "run_id": info("run_id"),
        "git_commit": info("git_commit"),
        "git_dirty": info("git_dirty"),
        "created": info("created"),
        "adapter_hash": info("adapter_hash"),
        "license": info("license", "Apache-2.0 (code); see the data licences"),
        "clinical_use_banner": PHANTOM_BANNER
        if trained_on_phantoms(run_info, data_manifest)
        else RESEARCH_BANNER,
        "intended_use": intended_use.strip(),
        "data_hash": str(data_manifest.get("hash") or "unknown"),
        "data_source": str(data_manifest.get("source") or "unknown"),
        "data_counts": counts_text,
        "data_description": str(data_manifest.get("description") or ""),
        "metrics_table": _metrics_table(metrics),
        "per_finding_table": per_finding_markdown(per_finding) if per_finding else "_Not recorded._",
        "limitations": "\n".join(f"- {item}" for item in limitations) if limitations else "- None recorded.",
    }
    template = Template(Path(template_path).read_text(encoding="utf-8"))
    return template.substitute(values)
