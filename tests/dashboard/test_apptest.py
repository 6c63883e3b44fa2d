"""Each dashboard page through Streamlit's AppTest, on a temp SQLite store seeded from phantom DICOM."""

from __future__ import annotations

from pathlib import Path

import pytest

from compliance.audit import read_events
from dashboard.demo import SCRIPT_PROBE
from pipelines.store import login_guard, open_store, questions, reviews

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


@pytest.fixture
def store_url(seeded_store_url, tmp_path, monkeypatch) -> str:
    url = seeded_store_url
    monkeypatch.setenv("MEDVLM_DATABASE_URL", url)
    from dashboard.auth import DEFAULT_USERS_FILE

    monkeypatch.setenv("MEDVLM_USERS_FILE", str(DEFAULT_USERS_FILE))  # the demo users
    monkeypatch.delenv("MEDVLM_MODEL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-mlflow.db'}")
    return url


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(APP), default_timeout=60).run()


def _login(username: str = "rad", password: str = "rad-demo"):
    at = _app()
    at.text_input(key="login_user").input(username)
    at.text_input(key="login_password").input(password)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception
    return at


def _open_first(at):
    at.button(key="open_first").click().run()
    assert not at.exception
    return at


def _events(url: str):
    with open_store(url) as store, store.transaction() as s:
        return read_events(s, actor="test")


def _markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(c.value for c in at.caption)


def test_login_refuses_wrong_password_and_audits(store_url):
    at = _login("rad", "wrong")
    assert [e.value for e in at.error] == ["Unknown user or wrong password."]
    assert not at.button(key="nav_Worklist") if "nav_Worklist" in [b.key for b in at.button] else True
    events = _events(store_url)
    with open_store(store_url) as store:
        expected_key = login_guard.user_key(store, "rad")  # the typed name is pseudonymised
    assert [(e.actor, e.object_id, e.outcome) for e in events if e.action == "user.login"] == [
        ("unauthenticated", expected_key, "refused")]
    assert "wrong" not in str([(e.details, e.object_id) for e in events])


def test_worklist_counts_filters_and_one_click_open(store_url):
    at = _login()
    assert [m.value for m in at.metric][:2] == ["3", "0"]
    table = at.dataframe[0].value
    assert len(table) == 3 and list(table["study"]) == ["PH0000", "PH0002", "PH0001"]
    at.selectbox(key="wl_flags").set_value("flagged").run()
    assert list(at.dataframe[0].value["study"]) == ["PH0000"]
    at.selectbox(key="wl_flags").set_value("any").run()
    at.selectbox(key="wl_sort").set_value("priority").run()
    at.toggle(key="wl_desc").set_value(False).run()
    assert list(at.dataframe[0].value["priority"]) == [1, 2, 3]
    at.toggle(key="wl_desc").set_value(True).run()
    at = _open_first(at)
    assert at.header[0].value == "Study PH0000"
    assert any(e.action == "study.open" and e.actor == "rad" for e in _events(store_url))


def test_study_page_shows_views_draft_flags_and_escapes_model_text(store_url):
    at = _open_first(_login())
    assert [v["label"] for v in _viewer_args(at)["views"]] == ["PA", "LL"]  # frontal and lateral side by side
    text = _markdown(at)
    assert "\\<script\\>" in text and "<script>" not in text  # escaped in every markdown element
    assert "\\*\\*not bold\\*\\*" in text and "\\:red\\[not red\\]" in text
    assert ":red-background[⚑ No pulmonary edema\\.]" in text  # the flagged sentence
    assert at.warning and "contradiction" in at.warning[0].value
    # The editor shows the raw text (a text area never renders markup).
    assert SCRIPT_PROBE.split(" ")[0] in at.text_area[0].value


def _viewer_args(at) -> dict:
    """The JSON arguments of the study viewer component (Cornerstone3D; its behaviour is tested in Chromium)."""
    import json

    (viewer,) = at.get("component_instance")
    assert viewer.proto.component_name.endswith("medvlm_viewer")
    assert sorted(s.key for s in viewer.proto.special_args) == [v["arg"] for v in json.loads(viewer.proto.json_args)["views"]]
    return json.loads(viewer.proto.json_args)


def test_viewer_presets(store_url):
    at = _open_first(_login())
    before = _viewer_args(at)["preset"]
    assert before["is_default"] and before["windows"] == [None, None]  # each file's own window
    at.get("button_group")[0].set_value("bone").run()
    assert not at.exception
    after = _viewer_args(at)["preset"]
    assert after["token"] != before["token"] and all(c > 0 and w >= 1 for c, w in after["windows"])


def test_edit_save_approve_and_version_history(store_url):
    at = _open_first(_login())
    findings = at.text_area[0].value
    edited = findings.replace("Mild interstitial", "Moderate interstitial")
    assert edited != findings
    at.text_area[0].set_value(edited)
    at.button(key="btn_save").click().run()
    assert [s.value for s in at.success] == ["Saved version 2 (unsigned)."]
    at.button(key="btn_sign").click().run()
    assert [s.value for s in at.success][0] == "Signed version 2 as rad."
    assert "Signed by rad (radiologist)" in at.success[1].value
    with open_store(store_url) as store:
        uid = [v for v in _worklist_uids(store)][0]
        versions = reviews.list_versions(store, uid)
    assert [(v.version, v.status) for v in versions] == [(1, "draft"), (2, "signed")]
    assert versions[-1].findings == edited.strip()
    assert versions[-1].signoff.bound_hash == versions[-1].content_hash
    text = _markdown(at)
    assert "Signed by rad (radiologist)" in text and ":green[**Moderate**]" in text


def _worklist_uids(store):
    from dashboard import logic

    return list(logic.load_worklist(store, logic.WorklistFilters(review=()))[0]["study_uid"])


def test_resident_cannot_sign(store_url):
    at = _open_first(_login("res", "res-demo"))
    assert at.button(key="btn_sign").disabled
    assert not at.button(key="btn_save").disabled


def test_reject_with_reason(store_url):
    at = _open_first(_login())
    at.button(key="btn_reject").click().run()
    assert [e.value for e in at.error] == ["give a reason for the rejection"]
    reason_key = [t.key for t in at.text_input if t.key and t.key.startswith("reject_reason_")][0]
    at.text_input(key=reason_key).input("laterality wrong")
    at.button(key="btn_reject").click().run()
    assert [s.value for s in at.success] == ["Rejected version 1."]


def test_ask_page_says_plainly_without_model(store_url):
    at = _open_first(_login())
    at.button(key="nav_Ask").click().run()
    assert not at.exception
    assert "No model is configured" in at.info[0].value
    assert at.chat_input[0].disabled


def test_model_page_without_mlflow(store_url):
    at = _open_first(_login())
    at.button(key="nav_Model").click().run()
    assert not at.exception
    assert "medvlm/demo" in _markdown(at)
    assert "No MLflow tracking store" in at.info[0].value


@pytest.mark.slow
def test_ask_page_with_tiny_model_stores_answer(store_url, tmp_path, monkeypatch, tiny_bundle):
    from dashboard import auth, logic
    from medvlm.checkpoint import save_checkpoint

    save_checkpoint(tiny_bundle, tmp_path / "ckpt")
    monkeypatch.setenv("MEDVLM_MODEL", str(tmp_path / "ckpt"))
    with open_store(store_url) as store:  # one signed prior case for the Study page's image retrieval
        first, *others = _worklist_uids(store)
        v = logic.open_study(store, auth.User("rad", "Dr Rad", "radiologist"), others[-1]).latest
        logic.approve(store, auth.User("rad", "Dr Rad", "radiologist"), others[-1], expected_version=v.version)
    at = _open_first(_login())
    text = _markdown(at)
    assert "Ranked by image similarity" in text and "PH0001** (similarity" in text
    at.button(key="nav_Ask").click().run()
    at.chat_input[0].set_value("Is there a pleural effusion?").run()
    assert not at.exception, at.exception
    assert len(at.chat_message) >= 2
    with open_store(store_url) as store:
        qs = questions.list_questions(store, first)
    assert [(u, q) for u, q, _ in qs] == [("rad", "Is there a pleural effusion?")]
    streamed = [m.value for m in at.chat_message[-1].markdown]
    assert qs[0][2] and streamed and streamed[0] == logic.escape_markdown(qs[0][2])  # what was streamed is what was stored
    assert any(c.value.startswith("confidence ") for c in at.chat_message[-1].caption)


def test_study_page_says_labels_rank_prior_cases_without_model(store_url):
    at = _open_first(_login())
    assert "Ranked by shared findings labels" in _markdown(at) and "no model is configured" in _markdown(at)
