"""Supply-chain gate: pinned versions against known advisories, and the SOUP list (IEC 62304).

Two commands, both generated from the truth (``constraints.txt`` and the installed metadata)::

    python -m compliance.supply_chain check [--constraints F] [--advisories F] [--no-installed]
    python -m compliance.supply_chain soup  [--constraints F] > SOUP.md

``check`` parses every ``name==version`` pin of ``constraints.txt`` and reports a violation when a
pin falls in an advisory's affected range (``compliance/advisories.yaml``), is below the package's
minimum version, or is not an exact pin. Packages named in the advisories but not pinned (pillow,
pulled in by others) are checked at their installed version unless ``--no-installed``. It prints
one line per violation and exits 1 when there is any (2 when an input file is unusable).

``soup`` prints the Software Of Unknown Provenance list as Markdown: each pinned package with its
pinned and installed version, licence and summary from ``importlib.metadata``, and the advisories
known for it. The output has no timestamp, so the same inputs give the same bytes.

Modules: ``pins`` (constraints parsing), ``advisories`` (the advisories file and the gate),
``soup`` (the SOUP list), ``cli`` (the two commands). Import from ``compliance.supply_chain``.

Only the standard library, ``packaging`` and ``yaml`` are used: the gate must run before (and
without) anything heavy being importable.
"""

from __future__ import annotations

from compliance.supply_chain.advisories import (
    Advisory,
    AdvisoryDB,
    Violation,
    check_versions,
    installed_versions,
    is_affected,
    load_advisories,
    parse_affected,
    run_check,
)
from compliance.supply_chain.cli import main
from compliance.supply_chain.pins import (
    DEFAULT_ADVISORIES,
    DEFAULT_CONSTRAINTS,
    REPO_ROOT,
    Pin,
    SupplyChainError,
    parse_constraints,
    parse_version,
)
from compliance.supply_chain.soup import licence_of, soup_markdown

__all__ = [
    "DEFAULT_ADVISORIES",
    "DEFAULT_CONSTRAINTS",
    "REPO_ROOT",
    "Advisory",
    "AdvisoryDB",
    "Pin",
    "SupplyChainError",
    "Violation",
    "check_versions",
    "installed_versions",
    "is_affected",
    "licence_of",
    "load_advisories",
    "main",
    "parse_affected",
    "parse_constraints",
    "parse_version",
    "run_check",
    "soup_markdown",
]
