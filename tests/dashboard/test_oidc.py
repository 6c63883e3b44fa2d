"""Single sign-on for real: the dashboard's ``st.login`` path against a real OpenID Connect provider
(PyPI ``oidc-provider-mock``) started on loopback, driven in headless Chromium.

Streamlit's ``st.login`` does discovery (``server_metadata_url``), the authorization-code flow, the
token exchange and the id_token validation (Authlib); the test drives the whole round trip through the
browser: the provider's consent form, the callback, then medvlm maps the e-mail to a role, rotates the
session and audits the log-in.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from compliance.audit import read_events
from dashboard.demo import seed_from_phantoms
from pipelines.launch.dashboard import dashboard_argv
from pipelines.store import open_store

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium absent: apt-get install chromium"),
]


def _users_file(tmp_path: Path) -> Path:
    demo = (REPO / "dashboard" / "users.example.yaml").read_text()
    text = demo.replace("role: radiologist", "role: radiologist\n    email: rad@example.org", 1)
    path = tmp_path / "users.yaml"
    path.write_text(text)
    return path


def test_sso_login_through_a_real_oidc_provider(tmp_path):
    pytest.importorskip("oidc_provider_mock")
    from oidc_provider_mock import run_server_in_thread
    from playwright.sync_api import sync_playwright
    from test_browser import _free_port, _wait_healthy

    from pipelines.phantoms import generate_phantoms

    phantoms = tmp_path / "phantoms"
    generate_phantoms(phantoms, n=1, seed=1, progress=False)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with open_store(url) as store:
        seed_from_phantoms(store, phantoms, probe_first=True)
    with run_server_in_thread() as oidc:
        issuer = f"http://127.0.0.1:{oidc.server_port}"
        port = _free_port()
        secrets = tmp_path / "secrets.toml"
        secrets.write_text(
            "[auth]\n"
            f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
            'cookie_secret = "test-cookie-secret-0123456789abcdef"\n'
            'client_id = "medvlm-test"\n'
            'client_secret = "medvlm-test-secret"\n'
            f'server_metadata_url = "{issuer}/.well-known/openid-configuration"\n')
        env = dict(os.environ, MEDVLM_DATABASE_URL=url, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'none.db'}",
                   MEDVLM_USERS_FILE=str(_users_file(tmp_path)))
        env.pop("MEDVLM_MODEL", None)
        log_path = tmp_path / "streamlit.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([*dashboard_argv(port), "--secrets.files", str(secrets)], env=env, cwd=REPO,
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_healthy(port, proc)
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
                    try:
                        page = browser.new_page()
                        page.goto(f"http://127.0.0.1:{port}/")
                        page.get_by_role("button", name="Log in with single sign-on").click()
                        page.wait_for_url(f"{issuer}/oauth2/authorize*", timeout=20_000)
                        page.locator("input[name=sub]").fill("rad@example.org")
                        page.get_by_role("button", name="Authorize").click()
                        page.get_by_text("Click a row to open the study").wait_for(timeout=30_000)
                        assert page.get_by_text("radiologist").first.is_visible()  # role from the users file
                    finally:
                        browser.close()
            finally:
                proc.terminate()
                proc.wait(timeout=15)
        assert "Traceback" not in log_path.read_text()
    with open_store(url) as store, store.transaction() as session:
        logins = [e for e in read_events(session, actor="test") if e.action == "user.login"]
    assert [(e.actor, e.outcome, e.details["role"]) for e in logins] == [("rad", "ok", "radiologist")]
