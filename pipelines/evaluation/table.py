"""What `medvlm evaluate` prints: the model's headline metrics next to both baselines, the registry decision."""

from __future__ import annotations

from typing import Any

SYSTEMS = ("model", "most_common", "nearest_neighbour")
HEADLINE = ("clinical_macro_f1", "clinical_micro_f1", "bleu_4", "rouge_l")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def evaluation_table(result: dict[str, Any]) -> Any:
    """A Rich table of `evaluate_command`'s result: one row per headline metric, one column per system."""
    from rich.table import Table

    table = Table(title=f"evaluate ({result['n_studies']} studies, split {result['split']})")
    table.add_column("metric")
    for name in SYSTEMS:
        table.add_column(name)
    for key in HEADLINE:
        table.add_row(key, *(_fmt(result[name].get(key)) for name in SYSTEMS))
    return table


def evaluation_output(result: dict[str, Any]) -> list[Any]:
    """Everything `medvlm evaluate` prints, in order: the table, the release gate's decision (with
    ``--register``), where the report was written (plain text, never read as markup)."""
    from rich.text import Text

    from pipelines.evaluation.image_folder import finding_lines

    out: list[Any] = [evaluation_table(result), *(Text(line) for line in finding_lines(result.get("finding")))]
    registry = result.get("registry")
    if registry:
        verdict = "promoted to champion" if registry["promoted"] else "champion unchanged"
        out.append(Text(f"registry: version {registry['version']}: {verdict} ({registry['reason']})"))
    out.append(Text(f"written: {result['eval_md']}"))
    return out
