"""The Cornerstone3D viewer component: its payload and shortcuts as plain functions, and end to end in
headless Chromium (real ``streamlit run`` server, the committed build, real and MONOCHROME1 DICOM)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dashboard.viewer_component import BUILD_DIR, payload, shortcuts

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
SHARED_DICOM = Path(os.environ.get("MEDVLM_SHARED_DATA", REPO.parent / "shared" / "data")) / "dicom"
RSNA = SHARED_DICOM / "rsna_chest_pa_jpeg_baseline.dcm"
RSNA_MONO1 = SHARED_DICOM / "rsna_chest_pa_relabelled_monochrome1.dcm"
SCREENSHOT = Path("/tmp/issue15_study.png")
PRIOR_DATE = "2024-03-10"
"""Study date of the phantom study's prior (same patient key, a year earlier): its panel's label."""
PROBABILITIES = {"Cardiomegaly": 0.83, "Pleural Effusion": 0.41, "Pleural Effusion|left": 0.38,
                 "Pleural Effusion|right": 0.06, "No Finding": 0.1}

browser_test = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium absent: apt-get install chromium"),
]


# --- plain functions -------------------------------------------------------------------------------

def test_committed_build_is_complete_and_shipped():
    names = {p.relative_to(BUILD_DIR).as_posix() for p in BUILD_DIR.rglob("*") if p.is_file()}
    assert {"index.html", "viewer.js", "viewer.css", "decodeImageFrameWorker.js",
            "wasm/libjpegturbowasm_decode.wasm"} <= names
    html = (BUILD_DIR / "index.html").read_text()
    assert 'type="module" src="viewer.js"' in html
    pyproject = (REPO / "pyproject.toml").read_text()
    data = re.search(r'\[tool\.setuptools\.package-data\]\n"\*" = \[(.*)\]', pyproject).group(1)
    for ext in ("*.js", "*.html", "*.css", "*.wasm"):
        assert f'"{ext}"' in data, f"{ext} missing from package-data: the wheel would lack the viewer"
    main_js = (BUILD_DIR / "viewer.js").read_text()
    assert "innerHTML" not in (REPO / "dashboard/viewer_component/frontend/src/main.js").read_text()
    assert "__medvlmViewer" in main_js


def test_key_event_counts_each_nonce_once():
    assert shortcuts.key_event(None, None) is None
    assert shortcuts.key_event({"key": "next", "nonce": "a1"}, None) == ("next", "a1")
    assert shortcuts.key_event({"key": "next", "nonce": "a1"}, "a1") is None  # a rerun, not a new press
    assert shortcuts.key_event({"key": "next", "nonce": "a2"}, "a1") == ("next", "a2")
    assert shortcuts.key_event({"key": "delete_all", "nonce": "a3"}, "a1") is None
    assert shortcuts.key_event({"key": "approve", "nonce": ""}, None) is None
    assert shortcuts.key_event(["approve"], None) is None


def test_neighbour_study_in_worklist_order():
    uids = ["a", "b", "c"]
    assert shortcuts.neighbour_study(uids, "a", 1) == "b"
    assert shortcuts.neighbour_study(uids, "b", -1) == "a"
    assert shortcuts.neighbour_study(uids, "c", 1) is None and shortcuts.neighbour_study(uids, "a", -1) is None
    assert shortcuts.neighbour_study(uids, "gone", 1) == "a"  # signed and filtered out: start again
    assert shortcuts.neighbour_study(uids, "gone", -1) == "c"
    assert shortcuts.neighbour_study([], "a", 1) is None


def test_panels_prior_and_component_args(tmp_path):
    images = [("PA", tmp_path / "pa.dcm"), ("LL", tmp_path / "ll.dcm"), ("LATERAL", tmp_path / "x.dcm")]
    prior = [("AP", tmp_path / "prior.dcm")]
    panels = payload.panel_images(images, prior)
    assert [(label, view) for label, view, _ in panels] == [("PA", "PA"), ("LL", "LL"), ("Prior · AP", "AP")]
    assert len(payload.panel_images(images)) == 2
    assert payload.panel_images(images, prior, "2024-03-10")[2][:2] == ("Prior · 2024-03-10", "AP")  # date only
    assert payload.prior_study_uid({"prior_study_uid": "1.2.3"}, "9.9") == "1.2.3"
    assert payload.prior_study_uid({"prior_study_uid": "9.9"}, "9.9") is None  # never itself
    assert payload.prior_study_uid({"prior_study_uid": 5}, "9.9") is None and payload.prior_study_uid(None, "x") is None

    files = [payload.ViewerFile("PA", "PA", b"one", "d1"), payload.ViewerFile("LL", "LL", b"two", "d2")]
    rows = payload.finding_rows(PROBABILITIES)
    assert [r["name"] for r in rows] == ["Cardiomegaly", "Pleural Effusion"]  # "No Finding" is not a finding
    assert rows[1]["sides"] == "left 0.38, right 0.06"
    args = payload.component_args(files, windows=[None, (100.0, 50.0)], preset="lung", study_uid_hash="h",
                                  findings=rows, keys=True, height=600)
    assert args["img0"] == b"one" and args["img1"] == b"two"  # top-level bytes: sent as binary
    assert [v["arg"] for v in args["views"]] == ["img0", "img1"]
    assert args["preset"] == {"token": "lung:h", "is_default": False, "windows": [None, [100.0, 50.0]]}
    json.dumps({k: v for k, v in args.items() if not isinstance(v, bytes)})  # the rest is JSON
    with pytest.raises(ValueError, match="2 panels, 1 windows"):
        payload.component_args(files, windows=[None], preset="default", study_uid_hash="h", findings=[],
                               keys=False, height=600)


def test_read_dicom_bytes_checks_before_reading(tmp_path, phantom_dir):
    from dashboard.viewer import ViewerError
    from dicom_io.limits import Limits

    pa = next(phantom_dir.rglob("*.dcm"))
    assert payload.read_dicom_bytes(pa) == pa.read_bytes()
    with pytest.raises(ViewerError, match="over"):
        payload.read_dicom_bytes(pa, limits=Limits(max_frame_pixels=100))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(ViewerError) as err:
        payload.read_dicom_bytes(junk)
    assert "not a dicom" not in str(err.value)


# --- the browser ------------------------------------------------------------------------------------

def _monochrome1_copy(src: Path, dst: Path) -> Path:
    """The same radiograph stored as MONOCHROME1: pixels inverted, window mirrored (must look identical)."""
    ds = pydicom.dcmread(src)
    top = (1 << int(ds.BitsStored)) - 1
    ds.PixelData = (top - ds.pixel_array.astype(np.int32)).astype(ds.pixel_array.dtype).tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter = f"{top - float(ds.WindowCenter):.1f}"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _seed_viewer_studies(store, phantom_dir: Path, tmp: Path) -> dict[str, str]:
    """Studies for the viewer tests (besides the 3 phantom ones): uid per name.

    The phantom study and its prior are linked as intake links them (same patient key, a year apart);
    the RSNA pair through the metadata's ``prior_study_uid`` (the fallback).
    """
    from dashboard import logic
    from pipelines.store.drafts import PROBABILITIES_KEY
    from pipelines.store.priors import PatientHeader, link_study

    pa = next(p for p in sorted(phantom_dir.rglob("*.dcm")) if "_PA" in str(p.parent))
    uids = {name: str(uuid.uuid4().int)[:30] for name in ("mono", "mono_prior", "rsna", "rsna_prior")}
    sentence = [{"text": "Heart size is enlarged.", "section": "findings", "confidence": 0.9}]

    def add(name: str, label: str, path: Path, priority: int, prior: str | None = None,
            date: str | None = None) -> None:
        meta = {"study_id": label, "images": [{"path": str(path), "view": "PA"}]}
        if prior:
            meta["prior_study_uid"] = uids[prior]
        logic.seed_study(store, study_uid=uids[name], source=str(path.parent), metadata=meta,
                         findings="Heart size is enlarged.", impression="Cardiomegaly.", sentences=sentence,
                         flags={PROBABILITIES_KEY: PROBABILITIES}, priority=priority)
        if date:
            link_study(store, uids[name], PatientHeader("VW-PATIENT-7", "", date, "091500"))

    add("mono_prior", "VW-M1", _monochrome1_copy(pa, tmp / "mono1.dcm"), 0, date=PRIOR_DATE.replace("-", ""))
    add("mono", "VW-PHANTOM", pa, 10, date="20250310")
    if RSNA.is_file() and RSNA_MONO1.is_file():
        add("rsna_prior", "VW-RSNA-M1", RSNA_MONO1, 0)
        add("rsna", "VW-RSNA", RSNA, 9, prior="rsna_prior")
    return uids


@pytest.fixture(scope="module")
def viewer_server(tmp_path_factory, phantom_dir):
    from dashboard.demo import seed_from_phantoms
    from pipelines.store import open_store
    from tests.dashboard.test_browser import _free_port, running_dashboard

    if not CHROMIUM.is_file():
        pytest.skip("Debian chromium absent: apt-get install chromium")
    tmp = tmp_path_factory.mktemp("viewer")
    url = f"sqlite:///{tmp / 'store.db'}"
    with open_store(url) as store:
        seed_from_phantoms(store, phantom_dir, probe_first=True)
        uids = _seed_viewer_studies(store, phantom_dir, tmp)
    port = _free_port()
    env = dict(os.environ, MEDVLM_DATABASE_URL=url, MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'none.db'}",
               MEDVLM_USERS_FILE=str(REPO / "dashboard" / "users.example.yaml"))
    env.pop("MEDVLM_MODEL", None)
    with running_dashboard(port, env, tmp / "streamlit.log") as base:
        yield base, url, uids


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield b
        finally:
            b.close()


IFRAME = 'iframe[title*="medvlm_viewer"]'


def _login(browser, base_url: str, user: str = "rad"):
    page = browser.new_page(viewport={"width": 1600, "height": 1300})
    page.goto(base_url)
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password", exact=True).fill(f"{user}-demo")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Click a row to open the study").wait_for(timeout=20_000)
    page.get_by_role("button", name="Open first study").click()
    page.get_by_text("AI draft").wait_for(timeout=20_000)
    return page


def _viewer_frame(page, first: Path | None = None):
    """The component's frame once every panel is loaded (the first panel showing file ``first`` when given)."""
    digest = hashlib.sha256(first.read_bytes()).hexdigest() if first else None
    page.locator(IFRAME).wait_for(timeout=20_000)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frame = next((f for f in page.frames if "medvlm_viewer" in f.url), None)
        try:
            state = frame.evaluate("window.__medvlmViewer && window.__medvlmViewer.getState()") if frame else None
        except Exception:  # noqa: BLE001 - the frame may be navigating; try again
            state = None
        if state and state["loaded"] and (digest is None or state["digests"][:1] == [digest]):
            return frame
        time.sleep(0.2)
    raise TimeoutError("the viewer did not load its images")


def _state(frame) -> dict:
    return frame.evaluate("window.__medvlmViewer.getState()")


def _wait_state(frame, check, what: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(frame)
        if check(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"viewer state never showed {what}: {state}")


def _settled(frame, key: str, timeout: float = 5.0):
    """``getState()[key]`` once two reads 300 ms apart agree."""
    last, deadline = _state(frame)[key], time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = _state(frame)[key]
        if now == last:
            return now
        last = now
    return last


def _page_xy(page, frame, panel: int, col: float, row: float) -> tuple[float, float]:
    box = page.locator(IFRAME).bounding_box()
    x, y = frame.evaluate(f"window.__medvlmViewer.imageToClient({panel}, [{col}, {row}])")
    return box["x"] + x, box["y"] + y


def _drag(page, start, end, button: str = "left") -> None:
    page.mouse.move(*start)
    page.mouse.down(button=button)
    page.mouse.move(*end, steps=8)
    page.mouse.up(button=button)


@pytest.mark.integration
@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium absent: apt-get install chromium")
def test_viewer_window_zoom_pan_length_presets_overlay(viewer_server, browser, phantom_dir):
    """Phantom study (known PixelSpacing) beside its prior stored as MONOCHROME1: both look alike.

    The prior is found by patient key and date (no ``prior_study_uid``) and labelled with its date only."""
    from dashboard import viewer

    base_url, _, _ = viewer_server
    page = _login(browser, base_url)
    try:
        assert page.get_by_role("heading", name="Study VW-PHANTOM", exact=True).is_visible()
        frame = _viewer_frame(page)
        inner = page.frame_locator(IFRAME)
        assert inner.locator(".viewport canvas").count() >= 2
        state = _state(frame)
        frontal, prior = state["viewports"]
        assert state["errors"] == [None, None]
        assert (frontal["label"], prior["label"]) == ("PA", f"Prior · {PRIOR_DATE}")
        assert inner.locator(".label", has_text=f"Prior · {PRIOR_DATE}").is_visible()
        assert (frontal["photometric"], frontal["invert"]) == ("MONOCHROME2", False)
        assert (prior["photometric"], prior["invert"]) == ("MONOCHROME1", True)
        ds = pydicom.dcmread(next(p for p in sorted(phantom_dir.rglob("*.dcm")) if "_PA" in str(p.parent)))
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
        assert frontal["voi"] == pytest.approx({"lower": c - 0.5 - (w - 1) / 2, "upper": c - 0.5 + (w - 1) / 2})
        grey = [frame.evaluate(f"window.__medvlmViewer.meanGrey({i})") for i in (0, 1)]
        assert 20 < grey[0] < 235 and abs(grey[0] - grey[1]) < 3  # MONOCHROME1 shown the right way round

        # Overlay: the classifier's probabilities, text only; the reviewer can hide it.
        overlay = inner.locator(".overlay")
        assert overlay.is_visible() and "Cardiomegaly" in overlay.inner_text() and "0.83" in overlay.inner_text()
        inner.get_by_role("button", name="Findings").click()
        assert overlay.is_hidden() and not _state(frame)["overlayVisible"]

        # Left-drag: window/level; wheel: zoom; middle-drag: pan; reset: back to the file's window.
        centre = _page_xy(page, frame, 0, 256, 256)
        _drag(page, centre, (centre[0] + 60, centre[1] + 30))
        moved = _wait_state(frame, lambda s: s["viewports"][0]["voi"] != frontal["voi"], "a new window")
        assert moved["viewports"][1]["voi"] == prior["voi"]  # only the dragged view changes
        page.mouse.move(*centre)
        for _ in range(3):
            page.mouse.wheel(0, -120)  # one notch each
            page.wait_for_timeout(50)
        zoomed = _wait_state(frame, lambda s: s["viewports"][0]["zoom"] > frontal["zoom"] * 1.1, "a zoom in")
        _drag(page, centre, (centre[0] + 40, centre[1]), button="middle")
        _wait_state(frame, lambda s: s["viewports"][0]["pan"] != zoomed["viewports"][0]["pan"], "a pan")
        inner.get_by_role("button", name="Reset").click()
        reset = _wait_state(frame, lambda s: s["viewports"][0]["voi"] == frontal["voi"], "the file window again")
        assert reset["viewports"][0]["zoom"] == pytest.approx(frontal["zoom"])

        # Length in mm from PixelSpacing: 300 image columns.
        inner.get_by_role("button", name="Length").click()
        _drag(page, _page_xy(page, frame, 0, 100, 300), _page_xy(page, frame, 0, 400, 300))
        _wait_state(frame, lambda s: s["lastLength"] is not None, "a length")
        length = _settled(frame, "lastLength")  # stats follow the last render after the drag
        # "mm Proj": PixelSpacing equals ImagerPixelSpacing, i.e. at the detector (no magnification correction).
        assert length["unit"].split()[0] == "mm"
        assert length["value"] == pytest.approx(300 * float(ds.PixelSpacing[1]), rel=0.02)
        assert "mm" in inner.locator(".status").inner_text()

        # A preset sets the viewport window to the preset's (centre, width) for each image.
        page.get_by_text("lung", exact=True).click()  # the segmented control above the viewer
        lc, lw = viewer.preset_window(viewer.load_viewer_image(ds.filename), "lung")
        lung = _wait_state(frame, lambda s: s["viewports"][0]["voi"] != reset["viewports"][0]["voi"], "the preset")
        assert lung["viewports"][0]["voi"] == pytest.approx({"lower": lc - 0.5 - (lw - 1) / 2,
                                                             "upper": lc - 0.5 + (lw - 1) / 2})
        page.screenshot(path=str(SCREENSHOT.with_name("issue15_study_phantom.png")), full_page=True)
    finally:
        page.close()


@pytest.mark.integration
@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium absent: apt-get install chromium")
@pytest.mark.skipif(not RSNA.is_file(), reason=f"shared RSNA DICOM absent ({RSNA}); see ../shared/data/README.md")
def test_real_rsna_dicom_full_resolution_and_relabelled_monochrome1(viewer_server, browser):
    base_url, _, _ = viewer_server
    page = _login(browser, base_url)
    try:
        _viewer_frame(page)  # the viewer listens for keys once it has started
        page.get_by_role("heading", name="Study VW-PHANTOM", exact=True).click()  # focus on the page, not a field
        page.keyboard.press("n")  # the RSNA study is second in the worklist
        page.get_by_role("heading", name="Study VW-RSNA", exact=True).wait_for(timeout=20_000)
        frame = _viewer_frame(page, first=RSNA)
        state = _state(frame)
        frontal, prior = state["viewports"]
        assert state["errors"] == [None, None]  # JPEG baseline decoded by the wasm codec in the worker
        assert (frontal["rows"], frontal["columns"], frontal["bitsStored"]) == (1024, 1024, 8)
        assert frontal["pixelSpacing"] == pytest.approx([0.168, 0.168])
        assert (frontal["photometric"], prior["photometric"], prior["invert"]) == ("MONOCHROME2", "MONOCHROME1", True)
        grey = [frame.evaluate(f"window.__medvlmViewer.meanGrey({i})") for i in (0, 1)]
        # The relabelled file has the same pixels: shown correctly it is the negative of the original.
        assert 30 < grey[0] < 225 and abs(grey[0] + grey[1] - 255) < 4
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.wait_for_timeout(300)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    finally:
        page.close()


def _events(store_url: str):
    from compliance.audit import read_events
    from pipelines.store import open_store

    with open_store(store_url) as store, store.transaction() as s:
        return read_events(s, actor="test")


@pytest.mark.integration
@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium absent: apt-get install chromium")
def test_resident_approve_shortcut_does_nothing(viewer_server, browser):
    from pipelines.store import open_store, reviews

    base_url, store_url, uids = viewer_server
    page = _login(browser, base_url, user="res")
    try:
        _viewer_frame(page)
        page.get_by_role("heading", name="Study VW-PHANTOM", exact=True).click()
        page.keyboard.press("a")
        page.get_by_text("Only radiologists can sign reports.").first.wait_for(timeout=10_000)
        assert page.get_by_role("dialog").count() == 0  # no confirmation offered
        page.wait_for_timeout(500)
    finally:
        page.close()
    with open_store(store_url) as store:
        assert [v.status for v in reviews.list_versions(store, uids["mono"])] == ["draft"]
    assert not [e for e in _events(store_url) if e.actor == "res" and "sign" in e.action]


@pytest.mark.integration
@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium absent: apt-get install chromium")
def test_keyboard_next_previous_approve_are_audited(viewer_server, browser):
    from dashboard import logic
    from pipelines.store import open_store, reviews

    base_url, store_url, _ = viewer_server
    with open_store(store_url) as store:  # the worklist as the page shows it by default
        table, _ = logic.load_worklist(store, logic.WorklistFilters(review=("unreviewed", "draft")))
    labels, order = list(table["study"]), list(table["study_uid"])
    page = _login(browser, base_url)
    try:
        _viewer_frame(page)
        page.get_by_role("heading", name=f"Study {labels[0]}", exact=True).click()
        page.keyboard.press("n")  # heard on the Streamlit page
        page.get_by_role("heading", name=f"Study {labels[1]}", exact=True).wait_for(timeout=20_000)
        _viewer_frame(page)
        page.frame_locator(IFRAME).locator(".viewport").first.click()  # focus inside the viewer iframe
        page.keyboard.press("p")  # heard inside the iframe
        page.get_by_role("heading", name=f"Study {labels[0]}", exact=True).wait_for(timeout=20_000)
        page.get_by_role("heading", name=f"Study {labels[0]}", exact=True).click()
        page.keyboard.press("n")
        page.get_by_role("heading", name=f"Study {labels[1]}", exact=True).wait_for(timeout=20_000)
        page.get_by_role("heading", name=f"Study {labels[1]}", exact=True).click()
        page.keyboard.press("e")  # focus the report editor: a key typed now is text, not a shortcut
        assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "FINDINGS"
        page.keyboard.press("Escape")
        page.get_by_role("heading", name=f"Study {labels[1]}", exact=True).click()
        page.keyboard.press("a")
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Sign version 1").wait_for(timeout=10_000)
        dialog.get_by_role("button", name="Sign").click()
        page.get_by_text("Signed version 1 as rad.").wait_for(timeout=20_000)
        page.wait_for_timeout(800)
        assert page.get_by_role("dialog").count() == 0  # the same key press does not ask again
    finally:
        page.close()
    with open_store(store_url) as store:
        versions = reviews.list_versions(store, order[1])
        assert [(v.version, v.status) for v in versions] == [(1, "signed")]
        assert versions[0].signoff.signer == "rad"
        assert reviews.verify_signoff(store, versions[0].id)
    actions = [(e.actor, e.action, e.outcome) for e in _events(store_url)]
    assert actions.count(("rad", "study.open", "ok")) >= 4  # first, next, previous, next
    assert ("rad", "version.sign", "ok") in actions

