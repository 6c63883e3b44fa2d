"""The review store: studies, the drafting job queue, drafts, report versions, sign-offs, audit.

``open_store(url)`` opens (and migrates) the database; pass the returned ``Store`` around.
Job queue functions live in ``pipelines.store.jobs``, review operations in
``pipelines.store.reviews``; the hash-chained audit log in ``compliance.audit``.
"""

from pipelines.store.db import Store, StoreError, open_store, upgrade_database

__all__ = ["Store", "StoreError", "open_store", "upgrade_database"]
