"""Repository-wide rules: import direction, lazy heavy imports, the CLI entry point."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# dashboard -> pipelines -> {medvlm, dicom_io} -> compliance (STYLE rule 1).
FORBIDDEN = {
    "compliance": {"medvlm", "dicom_io", "pipelines", "dashboard", "mlflow", "streamlit"},
    "medvlm": {"dicom_io", "pipelines", "dashboard", "mlflow", "streamlit"},
    "dicom_io": {"medvlm", "pipelines", "dashboard", "mlflow", "streamlit"},
    "pipelines": {"dashboard", "streamlit"},
}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_one_way(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_roots(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_light_packages_do_not_pull_heavy_dependencies():
    code = (
        "import sys, dicom_io, medvlm, compliance, pipelines.cli;"
        "heavy = [m for m in ('torch', 'monai', 'mlflow', 'streamlit', 'SimpleITK', 'ray') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"imported at start-up: {out.stdout.strip()}"


def test_cli_help_lists_commands():
    from typer.testing import CliRunner

    from pipelines.cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "phantoms", "ingest", "deid", "label", "train", "evaluate", "draft", "export", "ask",
                    "export-dataset", "audit", "dashboard"):
        assert command in result.output


def test_no_pickle_weights_committed():
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    assert not [f for f in tracked if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]


def test_cli_errors_are_one_line_and_keep_brackets(tmp_path):
    """A typed error prints as one actionable line (exit 2, no traceback); brackets in it are not eaten as markup."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    missing = tmp_path / "[scan]" / "nothing-here"
    result = CliRunner().invoke(app, ["ingest", str(missing), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "[scan]" in result.output
