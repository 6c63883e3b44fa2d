"""Entry point of ``python -m compliance.supply_chain`` (CI runs ``check``)."""

from compliance.supply_chain.cli import main

raise SystemExit(main())
