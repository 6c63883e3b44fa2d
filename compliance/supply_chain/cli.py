"""``python -m compliance.supply_chain {check,soup}``: parse, run, print, exit status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from compliance.clock import sha256_file
from compliance.supply_chain.advisories import load_advisories, run_check
from compliance.supply_chain.pins import (
    DEFAULT_ADVISORIES,
    DEFAULT_CONSTRAINTS,
    SupplyChainError,
    parse_constraints,
)
from compliance.supply_chain.soup import soup_markdown

DESCRIPTION = "Supply-chain gate: pinned versions against known advisories, and the SOUP list (IEC 62304)."


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m compliance.supply_chain {check,soup}``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m compliance.supply_chain", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("check", "fail on pins affected by an advisory or below a minimum version"),
        ("soup", "print the SOUP list as Markdown"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--constraints", type=Path, default=DEFAULT_CONSTRAINTS, help="constraints file")
        p.add_argument("--advisories", type=Path, default=DEFAULT_ADVISORIES, help="advisories YAML")
        if name == "check":
            p.add_argument(
                "--no-installed",
                action="store_true",
                help="check the pins only, not installed versions of unpinned advised packages",
            )
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            found = run_check(args.constraints, args.advisories, use_installed=not args.no_installed)
            blocking = [v for v in found if v.blocking]
            for v in found:
                print(("VIOLATION " if v.blocking else "note ") + v.message)
            pins = parse_constraints(args.constraints)
            print(f"{len(blocking)} violation(s) in {len(pins)} pins of {args.constraints}", file=sys.stderr)
            return 1 if blocking else 0
        pins = parse_constraints(args.constraints)
        db = load_advisories(args.advisories)
        digest = sha256_file(args.constraints)
        sys.stdout.write(soup_markdown(pins, db, constraints_digest=digest))
        return 0
    except SupplyChainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
