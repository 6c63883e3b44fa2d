"""Opening the review store: engine, SQLite PRAGMAs, sessions and migrations.

Embedded default: a SQLite file at ``var/medvlm.db`` (``$MEDVLM_DATABASE_URL`` or an explicit URL
override it), in WAL mode with ``synchronous=FULL`` and foreign keys on. Every SQLite transaction
starts with ``BEGIN IMMEDIATE``, taking the write lock up front: two writers never both read the
same queue state and then collide, and a busy database waits (``busy_timeout``) instead of failing
half-way. At scale: PostgreSQL through ``postgresql+psycopg://...``; the job queue then uses
``SELECT ... FOR UPDATE SKIP LOCKED``.

There is no module-level engine (STYLE rule 22): ``open_store`` returns a ``Store`` that callers
pass around and ``close``.

Signing key: ``$MEDVLM_SIGNING_KEY`` (or ``open_store(signing_key=...)``), never stored in the
database. Every session of the store carries it (``Session.info``) so that audit events and the
head get their MAC; sign-offs are refused without it (``pipelines.store.signatures``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from compliance.audit import KEY_INFO, check_key, load_signing_key, pseudonym_salt, pseudonymize
from pipelines.errors import PipelineError

DEFAULT_SQLITE_PATH = Path("var") / "medvlm.db"
DATABASE_URL_ENV = "MEDVLM_DATABASE_URL"
AUDIT_KEY_ENV = "MEDVLM_AUDIT_KEY"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_SQLITE_BUSY_TIMEOUT_MS = 30_000  # workers wait this long for the write lock before giving up


class StoreError(PipelineError, RuntimeError):
    """The store cannot be opened or migrated (bad URL, unsupported database)."""


def resolve_database_url(url: str | None = None) -> str:
    """Return ``url``, else ``$MEDVLM_DATABASE_URL``, else the SQLite file ``var/medvlm.db``."""
    if url:
        return url
    env = os.environ.get(DATABASE_URL_ENV)
    if env:
        return env
    DEFAULT_SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_SQLITE_PATH}"


@dataclass(frozen=True)
class Store:
    """An open review store: the engine, a session factory and the pseudonym key for the audit log.

    Attributes:
        url: the database URL, password hidden.
        engine: the SQLAlchemy engine (thread-safe; one per process).
        sessions: session factory bound to ``engine``.
        audit_key: HMAC key that turns study UIDs into audit pseudonyms.
        signing_key: the server's signing key (MACs of sign-offs and audit events); None when
            ``$MEDVLM_SIGNING_KEY`` is not set (signing is then refused).
    """

    url: str
    engine: Engine
    # keys never appear in a repr (tracebacks, logs); the session factory carries the signing key
    sessions: sessionmaker[Session] = field(repr=False)
    audit_key: bytes = field(repr=False)
    signing_key: bytes | None = field(default=None, repr=False)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session in one transaction; commit on success, roll back on error."""
        with self.sessions.begin() as session:
            yield session

    def pseudonym(self, study_uid: str) -> str:
        """Return the audit pseudonym of a study UID."""
        return pseudonymize(study_uid, self.audit_key)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001 - DB-API objects
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite would defer it otherwise).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # REPLACE conflict resolution fires DELETE triggers only with recursive triggers on: our
        # guards then refuse it twice over (BEFORE INSERT triggers refuse it on any connection).
        cursor.execute("PRAGMA recursive_triggers=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_store_engine(url: str) -> Engine:
    """Create an engine for a store URL, with the SQLite PRAGMAs and locking described above.

    Args:
        url: ``sqlite:///PATH``, ``sqlite://`` (in memory, one shared connection) or
            ``postgresql+psycopg://USER@HOST:PORT/DB``.

    Returns:
        The engine.

    Raises:
        StoreError: for another database.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        kwargs: dict = {
            "connect_args": {"check_same_thread": False, "timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000}
        }
        if in_memory:
            kwargs["poolclass"] = StaticPool
        else:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    raise StoreError(f"unsupported database {backend!r}: use a sqlite:/// or postgresql+psycopg:// URL")


def _alembic_config(connection: Connection):  # noqa: ANN202 - alembic imported lazily
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade_database(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` (configuration built in code, no alembic.ini).

    Args:
        url_or_engine: a database URL or an engine made by ``create_store_engine``.
        revision: target revision, ``head`` by default.
    """
    from alembic import command

    engine = create_store_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), revision)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def open_store(
    url: str | None = None, *, migrate: bool = True, audit_key: bytes | str | None = None,
    signing_key: bytes | str | None = None,
) -> Store:
    """Open (and by default migrate) the review store.

    Args:
        url: database URL; default ``$MEDVLM_DATABASE_URL`` or SQLite ``var/medvlm.db``.
        migrate: run the migrations to head first.
        audit_key: HMAC key for audit pseudonyms; default ``$MEDVLM_AUDIT_KEY``, else the random
            key generated into the database at migration time.
        signing_key: the server's signing key; default ``$MEDVLM_SIGNING_KEY`` (None when unset).

    Returns:
        The open store; ``close`` it (or use it as a context manager).

    Raises:
        SigningKeyMissingError: the signing key is set but too short.
    """
    resolved = resolve_database_url(url)
    signing = check_key(signing_key) if signing_key is not None else load_signing_key()
    engine = create_store_engine(resolved)
    if migrate:
        upgrade_database(engine)
    sessions = sessionmaker(engine, expire_on_commit=False, info={KEY_INFO: signing})
    key = audit_key if audit_key is not None else os.environ.get(AUDIT_KEY_ENV)
    if key is None:
        with sessions.begin() as session:
            key = pseudonym_salt(session)
    key_bytes = key.encode() if isinstance(key, str) else key
    return Store(
        url=make_url(resolved).render_as_string(hide_password=True),
        engine=engine,
        sessions=sessions,
        audit_key=key_bytes,
        signing_key=signing,
    )


def new_pseudonym_salt() -> str:
    """Return a fresh random pseudonym key (64 hex digits); the migration stores one per database."""
    return secrets.token_hex(32)
