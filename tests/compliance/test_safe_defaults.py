"""Safe defaults of what medvlm starts: the dashboard's Streamlit server flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.launch.dashboard import dashboard_argv


def _flags(argv: list[str]) -> dict[str, str]:
    """`--name value` pairs of a command line (the last one wins, as in Streamlit)."""
    flags = {}
    for i, item in enumerate(argv[:-1]):
        if item.startswith("--"):
            flags[item] = argv[i + 1]
    return flags


def test_dashboard_binds_loopback_with_xsrf_and_upload_limit():
    argv = dashboard_argv(8599)
    flags = _flags(argv)
    assert argv[1:4] == ["-m", "streamlit", "run"]
    assert flags["--server.address"] == "127.0.0.1"
    assert flags["--server.port"] == "8599"
    assert flags["--server.enableXsrfProtection"] == "true"
    limit_mb = int(flags["--server.maxUploadSize"])
    assert 0 < limit_mb <= 50, "uploads must be capped well below Streamlit's 200 MB default"
    assert flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"  # nothing phones home from a hospital network
    # Nothing widens the defaults behind the explicit flags.
    assert "--server.enableCORS" not in flags or flags["--server.enableCORS"] == "true"
    assert not any("0.0.0.0" in item for item in argv)


def test_dashboard_host_is_only_what_the_operator_asks_for():
    flags = _flags(dashboard_argv(8600, host="10.0.0.5", app_path=Path("/x/app.py")))
    assert flags["--server.address"] == "10.0.0.5" and flags["--server.enableXsrfProtection"] == "true"


# The PostgreSQL role the application should connect as (README "Safe defaults"): it may append to
# the audit log but not change or remove it, even if the triggers were dropped, and it cannot drop
# them because it does not own the tables. The migrations run as the owner.
APP_ROLE_SQL = """
CREATE ROLE {role} LOGIN;
GRANT CONNECT ON DATABASE {database} TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM {role};
"""


@pytest.mark.integration
def test_postgres_app_role_can_append_but_not_change_the_audit_log(pg_cluster):
    import uuid

    import psycopg
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from compliance.audit import append_event, verify_chain
    from pipelines.store import open_store

    owner_url = pg_cluster.create_database()
    open_store(owner_url, audit_key=b"k").close()  # migrate as the owner
    database = make_url(owner_url).database
    role = "medvlm_app_" + uuid.uuid4().hex[:8]
    with psycopg.connect(f"host=127.0.0.1 port={pg_cluster.port} user=postgres dbname={database}",
                         autocommit=True) as conn:
        for statement in APP_ROLE_SQL.format(role=role, database=database).strip().split(";\n"):
            conn.execute(statement.rstrip(";"))

    app_url = make_url(owner_url).set(username=role).render_as_string(hide_password=False)
    store = open_store(app_url, migrate=False, audit_key=b"k")
    try:
        for i in range(2):
            with store.transaction() as s:
                append_event(s, actor="radiologist-1", action="open", object_type="study", object_id=f"s{i}")
        for statement in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events",
                          "TRUNCATE audit_events", "DROP TRIGGER audit_events_no_update_delete ON audit_events"):
            with pytest.raises(DBAPIError, match="permission denied|must be owner"), store.transaction() as s:
                s.execute(text(statement))
        with store.transaction() as s:
            assert verify_chain(s).ok
    finally:
        store.close()
