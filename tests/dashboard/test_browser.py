"""End to end in headless Chromium: the real ``streamlit run`` server, log in, edit, approve, check the store."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from compliance.audit import read_events, verify_chain
from dashboard.demo import seed_from_phantoms
from pipelines.launch.dashboard import dashboard_argv
from pipelines.store import open_store, reviews

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path("/tmp/dashboard_shots")
REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium absent: apt-get install chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError("streamlit did not answer /_stcore/health")


@contextlib.contextmanager
def running_dashboard(port: int, env: dict[str, str], log_path: Path):
    """`medvlm dashboard` as a real Streamlit server on 127.0.0.1:`port`; yields its URL, stopped by its PID."""
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(dashboard_argv(port), env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(port, proc)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def server(tmp_path):
    from pipelines.phantoms import generate_phantoms

    phantoms = tmp_path / "phantoms"
    generate_phantoms(phantoms, n=3, seed=1, progress=False)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with open_store(url) as store:
        seed_from_phantoms(store, phantoms, probe_first=True)
    port = _free_port()
    env = dict(os.environ, MEDVLM_DATABASE_URL=url, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'none.db'}")
    env["MEDVLM_USERS_FILE"] = str(REPO / "dashboard" / "users.example.yaml")  # the demo users
    env.pop("MEDVLM_MODEL", None)
    with running_dashboard(port, env, tmp_path / "streamlit.log") as base:
        yield base, url


def _shot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / name)


def test_login_edit_approve_in_chromium(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base_url, store_url = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1500})
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(base_url)
            page.get_by_label("Username").fill("rad")
            page.get_by_label("Password", exact=True).fill("rad-demo")
            page.get_by_role("button", name="Log in").click()
            page.get_by_text("Click a row to open the study").wait_for(timeout=20_000)
            expect(page.get_by_text("PH0000").first).to_be_visible()
            _shot(page, tmp_path, "worklist.png")

            page.get_by_role("button", name="Open first study").click()
            page.get_by_text("AI draft").wait_for(timeout=20_000)
            viewer = page.frame_locator('iframe[title*="medvlm_viewer"]')
            expect(viewer.locator(".viewport")).to_have_count(2)  # frontal and lateral
            # Model text shows literally and runs nothing.
            expect(page.get_by_text("<script>window['medvlm_xss']=1</script>", exact=False).first).to_be_visible()
            expect(page.get_by_text("**not bold**", exact=False).first).to_be_visible()
            assert page.evaluate("window.medvlm_xss") is None
            assert page.evaluate("window.medvlm_img") is None
            assert dialogs == []
            _shot(page, tmp_path, "study.png")

            findings = page.get_by_label("FINDINGS")
            text = findings.input_value()
            edited = text.replace("Mild interstitial", "Moderate interstitial")
            assert edited != text
            findings.fill(edited)
            page.get_by_role("button", name="Approve and sign").click()
            page.get_by_text("Signed version 2 as rad.").wait_for(timeout=20_000)
            _shot(page, tmp_path, "signed.png")

            # Back to the worklist: the signed study has left the default (unread) list, and one
            # click on a row opens the next study.
            page.get_by_role("button", name="Worklist").click()
            page.get_by_text("2 studies match").wait_for(timeout=20_000)
            box = page.locator('[data-testid="stDataFrame"]').bounding_box()
            page.mouse.click(box["x"] + 15, box["y"] + 36 + 18)  # first data row's selection cell
            expect(page.get_by_role("heading", name="Study PH0002")).to_be_visible(timeout=20_000)
        finally:
            browser.close()

    with open_store(store_url) as store:
        from dashboard import logic

        uid = str(logic.load_worklist(store, logic.WorklistFilters(review=()))[0].loc[0, "study_uid"])
        versions = reviews.list_versions(store, uid)
        assert [(v.version, v.status) for v in versions] == [(1, "draft"), (2, "signed")]
        signed = versions[-1]
        assert signed.findings == edited.strip() and signed.author == "rad"
        assert signed.signoff.signer == "rad" and signed.signoff.role == "radiologist"
        assert signed.signoff.bound_hash == reviews.content_hash(signed.findings, signed.impression)
        assert reviews.verify_signoff(store, signed.id)
        with store.transaction() as s:
            assert verify_chain(s).ok
            events = read_events(s, actor="test")
        actions = [(e.actor, e.action, e.outcome) for e in events]
        for expected in [("rad", "user.login", "ok"), ("rad", "study.open", "ok"), ("rad", "version.edit", "ok"),
                         ("rad", "version.sign", "ok"), ("rad", "study.sign", "ok")]:
            assert expected in actions
        assert all(uid not in str(e.object_id) + str(e.details) for e in events)
