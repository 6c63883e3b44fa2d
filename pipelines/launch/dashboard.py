"""``medvlm dashboard``: start the Streamlit review dashboard as a child process.

The server binds to loopback only, with XSRF protection on and uploads capped at 10 MB; put a
reverse proxy with TLS in front of it to serve other machines. The store URL reaches the app
through ``MEDVLM_DATABASE_URL`` (the app opens the store itself; nothing global is shared).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP_PATH = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
DEMO_USERS_FILE = APP_PATH.with_name("users.example.yaml")
"""The demo users (public passwords): only `medvlm demo` names it; the dashboard has no default users."""
DATABASE_URL_ENV = "MEDVLM_DATABASE_URL"
TRUST_REMOTE_CODE_ENV = "MEDVLM_TRUST_REMOTE_CODE"
"""``1``: the app may run its model folder's own code (``medvlm dashboard --trust-remote-code``)."""


def dashboard_argv(port: int, host: str = "127.0.0.1", app_path: Path = APP_PATH) -> list[str]:
    """The ``streamlit run`` command line for the dashboard.

    Args:
        port: TCP port to listen on.
        host: address to bind (loopback by default).
        app_path: the Streamlit entry script.

    Returns:
        argv for ``subprocess``.
    """
    return [
        sys.executable, "-m", "streamlit", "run", str(app_path),
        "--server.headless", "true",
        "--server.address", host,
        "--server.port", str(int(port)),
        "--server.enableXsrfProtection", "true",
        "--server.enableCORS", "true",
        "--server.maxUploadSize", "10",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
    ]


def check_model(model: str, *, trust_remote_code: bool = False) -> None:
    """The drafting job's model check (family, pickle, remote code, tensor names), no weights loaded."""
    from pipelines.drafting.identity import DraftOptions, model_identity
    from pipelines.tracking.registry import resolve_model_uri

    model_identity(resolve_model_uri(model), DraftOptions(trust_remote_code=trust_remote_code))


def dashboard_command(db_url: str | None, port: int, host: str = "127.0.0.1", model: str | None = None,
                      trust_remote_code: bool = False) -> int:
    """Run the dashboard until it exits (Ctrl-C stops it) and return its exit status.

    Args:
        db_url: review store URL; None keeps ``$MEDVLM_DATABASE_URL`` or the default SQLite file.
        port: TCP port.
        host: bind address; anything but loopback prints a warning (no TLS here).
        model: medvlm checkpoint, Hugging Face folder or MLflow URI for the Ask page (else ``$MEDVLM_MODEL``).
        trust_remote_code: allow that Hugging Face folder's own code (``$MEDVLM_TRUST_REMOTE_CODE=1``
            for the app, which records each load of trusted code in the audit log).

    Returns:
        The Streamlit process exit status (0 after Ctrl-C).

    Raises:
        medvlm.errors.CheckpointError, pipelines.tracking.registry.RegistryError: `model` is refused
            (checked before the server starts, without loading the weights).
    """
    if model:
        check_model(model, trust_remote_code=trust_remote_code)
    env = dict(os.environ)
    if db_url:
        env[DATABASE_URL_ENV] = db_url
    if model:
        env["MEDVLM_MODEL"] = str(model)
    if trust_remote_code:
        env[TRUST_REMOTE_CODE_ENV] = "1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {host}; serve it through a TLS reverse proxy", file=sys.stderr)
    print(f"medvlm dashboard: http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/", flush=True)
    proc = subprocess.Popen(dashboard_argv(port, host), env=env)  # noqa: S603 - fixed argv, no shell
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 0
