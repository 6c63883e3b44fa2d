"""What the `medvlm` command line prints: one-line typed errors, summary tables, figures.

Kept apart from `pipelines.cli` (which only maps options onto functions) so that every command prints the
same way. Messages are data, never Rich markup.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def fail(exc: Exception) -> None:
    """Print a typed error as one actionable line and exit 2 (no traceback reaches the user)."""
    from rich.markup import escape

    # the message is data (paths, tag names), never markup: "[...]" in it must print as written
    console.print(f"[bold red]error[/]: {escape(f'{type(exc).__name__}: {exc}')}", highlight=False)
    raise typer.Exit(code=2)


def known_errors() -> tuple[type[Exception], ...]:
    """Errors that carry an actionable message; anything else is a bug and keeps its traceback."""
    from compliance.deid_recipe import RecipeError
    from dicom_io.errors import DicomIOError
    from medvlm.errors import MedVLMError
    from pipelines.errors import PipelineError

    return (DicomIOError, MedVLMError, PipelineError, RecipeError, FileNotFoundError, NotADirectoryError)


def print_summary(title: str, summary: dict) -> None:
    """A two-column table of a command's summary (nested dicts as `key: value` lines)."""
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = "\n".join(f"{k}: {v}" for k, v in value.items()) or "-"
        table.add_row(str(key), str(value))
    console.print(table)


def gate(registry: dict | None) -> str:
    """One line on the registered version and the champion release gate's decision."""
    if not registry:
        return "not registered"
    verdict = "promoted to champion" if registry.get("promoted") else "champion unchanged"
    return f"version {registry.get('version')}: {verdict} ({registry.get('reason')})"


def fmt(value: float | None) -> str:
    """A figure with three decimals, or '-' when absent."""
    return "-" if value is None else f"{value:.3f}"
