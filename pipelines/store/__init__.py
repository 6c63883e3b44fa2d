"""The review store: every query of the product lives here; callers pass a `Store` around.

``open_store(url)`` opens (and migrates) the database. One module per concern:

- ``db``: engine, sessions, transactions, migrations; ``models``: the ORM tables.
- ``studies``: studies in, quarantine, study metadata; ``priors``: patient key and the prior study; ``jobs``: the leased drafting queue;
  ``leases``: lease renewal while a batch is drafted; ``owners``: jobs of a dead worker process
  released at once.
- ``reviews``: the reader's actions (open, edit, sign, reject), each checked and written in one
  transaction; ``versions``: report versions and sign-offs; ``signatures``, ``integrity``: keyed
  MACs and their checks; ``questions``, ``logins``, ``login_guard`` (throttling and lockout).
- ``worklist``, ``study_detail``, ``drafts``: what the dashboard reads; ``exports``: what leaves.

The hash-chained audit log is ``compliance.audit``.
"""

from pipelines.store.db import Store, StoreError, open_store, upgrade_database

__all__ = ["Store", "StoreError", "open_store", "upgrade_database"]
