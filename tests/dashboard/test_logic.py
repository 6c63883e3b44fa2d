"""Dashboard logic without Streamlit: text safety, users, viewer maths, worklist, review actions."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from markdown_it import MarkdownIt

from compliance.audit import read_events, verify_chain
from dashboard import auth, logic, viewer
from dashboard.demo import SCRIPT_PROBE
from pipelines.store import open_store, reviews
from pipelines.store.models import ReportVersion, Signoff

RAD = auth.User("rad", "Dr Rad", "radiologist")
RES = auth.User("res", "Dr Res", "resident")


@pytest.fixture
def store(seeded_store_url):
    st = open_store(seeded_store_url)
    yield st
    st.close()


def _events(store):
    with store.transaction() as session:
        return read_events(session, actor="test")


# ------------------------------------------------------------------ text safety


def test_escape_markdown_renders_literally_in_commonmark():
    md = MarkdownIt("commonmark")  # html enabled: the strictest check that nothing becomes markup
    html = md.render(logic.escape_markdown(SCRIPT_PROBE))
    assert "<script" not in html and "<img" not in html and "<strong>" not in html and "<a " not in html
    assert "&lt;script&gt;" in html
    # Every visible character survives (the escapes are removed by the renderer).
    assert "window['medvlm_xss']=1" in html.replace("&#39;", "'")


def test_escape_markdown_disarms_streamlit_directives_and_blocks():
    out = logic.escape_markdown(":red[x] $a$ # head\n- item")
    assert "\\:red\\[x\\]" in out and "\\$a\\$" in out and "\n" not in out and "\\#" in out


def test_sentence_highlighting():
    low = logic.SentenceView("Small <b>effusion</b>.", "findings", 0.2, 0)
    high = logic.SentenceView("Heart normal.", "findings", 0.9, 1)
    unknown = logic.SentenceView("No data.", "findings", None, 2)
    assert logic.sentence_markdown(low).startswith(":orange-background[")
    assert "\\<b\\>" in logic.sentence_markdown(low)
    assert logic.sentence_markdown(high) == "Heart normal\\."
    assert logic.sentence_markdown(unknown) == "No data\\."
    assert logic.sentence_markdown(high, flagged=True).startswith(":red-background[")
    flags = [logic.FlagView("contradiction", "m", (1,))]
    md = logic.section_markdown([low, high, unknown], "findings", flags)
    assert md.count(":red-background[") == 1 and md.count(":orange-background[") == 1


def test_parse_flags_accepts_store_shapes():
    item = {"code": "contradiction", "message": "Edema asserted and negated", "sentence_indices": [0, 3]}
    for raw in ([item], {"consistency": [item]}, {"flags": [item], "low_confidence": []}):
        (flag,) = logic.parse_flags(raw)
        assert flag == logic.FlagView("contradiction", "Edema asserted and negated", (0, 3))
    assert logic.parse_flags({}) == [] and logic.parse_flags(None) == []


def test_version_diff_marks_changed_words():
    runs = logic.version_diff("Small left effusion.", "Small right effusion.")
    assert ("-", "left") in runs and ("+", "right") in runs and ("=", "Small") in runs
    assert ":red[~~left~~]" in logic.diff_markdown("Small left effusion.", "Small right effusion.")


# ------------------------------------------------------------------ users


def test_password_hash_roundtrip_and_refusals():
    h = auth.hash_password("s3cret", n=2**10)
    assert h.startswith("scrypt$1024$") and "s3cret" not in h
    assert auth.verify_password("s3cret", h)
    assert not auth.verify_password("S3cret", h)
    assert not auth.verify_password("s3cret", "plain-text")
    assert auth.hash_password("x", n=2**10) != auth.hash_password("x", n=2**10)  # salted


def test_demo_users_file_and_roles():
    users = auth.load_users(auth.DEFAULT_USERS_FILE)
    assert {u.role for u in users.values()} == {"radiologist", "resident", "admin"}
    assert auth.authenticate(users, "rad", "rad-demo").role == "radiologist"
    assert auth.authenticate(users, "rad", "wrong") is None
    assert auth.authenticate(users, "nobody", "rad-demo") is None
    assert auth.can_sign("radiologist") and not auth.can_sign("resident") and not auth.can_sign("admin")


def test_users_file_refuses_plaintext_and_bad_roles(tmp_path):
    p = tmp_path / "u.yaml"
    p.write_text("users:\n  - {username: a, role: radiologist, password: hunter2}\n")
    with pytest.raises(auth.AuthError, match="plaintext") as exc:
        auth.load_users(p)
    assert "hunter2" not in str(exc.value)
    p.write_text("users:\n  - {username: a, role: chief}\n")
    with pytest.raises(auth.AuthError, match="role"):
        auth.load_users(p)
    with pytest.raises(auth.AuthError, match="not found"):
        auth.load_users(tmp_path / "missing.yaml")


def test_oidc_user_maps_email_to_role():
    users = {"rad": auth.User("rad", "R", "radiologist", email="rad@example.org")}
    assert auth.oidc_user(users, "RAD@example.org", "R").role == "radiologist"
    assert auth.oidc_user(users, "other@example.org", "O").role == "resident"


# ------------------------------------------------------------------ viewer


def test_apply_window_follows_dicom_linear_function():
    values = np.array([[0.0, 99.5, 100.0, 150.0, 200.0]])
    out = viewer.apply_window(values, centre=100.0, width=101.0)
    assert out.dtype == np.uint8
    assert out[0, 0] == 0 and out[0, 4] == 255
    assert abs(int(out[0, 2]) - 128) <= 1  # the centre maps to mid-grey
    inv = viewer.apply_window(values, centre=100.0, width=101.0, invert=True)
    assert np.abs(inv.astype(int) - (255 - out.astype(int))).max() <= 1  # rounding at .5 only


def test_presets_header_default_and_relative_ranges():
    values = np.tile(np.linspace(0, 1000, 100, dtype=np.float32), (10, 1))
    img = viewer.viewer_image_from_values(values, header_window=(300.0, 200.0))
    assert viewer.preset_window(img, "default") == (300.0, 200.0)
    lung_c, _ = viewer.preset_window(img, "lung")
    bone_c, bone_w = viewer.preset_window(img, "bone")
    assert lung_c < bone_c and bone_w >= 1
    mono1 = viewer.viewer_image_from_values(values, invert=True)
    assert viewer.preset_window(mono1, "bone")[0] < viewer.preset_window(mono1, "lung")[0]
    with pytest.raises(ValueError, match="unknown window preset"):
        viewer.preset_window(img, "brain")


def test_zoom_crop_and_resize():
    img = np.arange(100 * 80).reshape(100, 80)
    crop = viewer.zoom_crop(img, 2.0, (0.0, 1.0))  # clamped into the top-right corner
    assert crop.shape == (50, 40) and crop[0, -1] == img[0, -1]
    assert viewer.zoom_crop(img, 1.0).shape == img.shape
    with pytest.raises(ValueError):
        viewer.zoom_crop(img, 0.5)
    big = viewer.resize_nearest(img, 200)
    assert big.shape == (200, 160) and set(np.unique(big)) <= set(np.unique(img))


def test_viewer_matches_dicom_io_window_on_phantoms(phantom_dir):
    from dicom_io.reader import load_image

    for path in sorted(phantom_dir.glob("*/*/1.dcm")):  # MONOCHROME1 and 2, three transfer syntaxes
        img = viewer.load_viewer_image(path)
        assert img.header_window is not None and img.values.shape == (512, 512)
        shown = viewer.render_view(img, **dict(zip(("centre", "width"), viewer.preset_window(img, "default"),
                                                   strict=True)), display_size=512)
        ref, _ = load_image(path, window="window")
        corr = np.corrcoef(shown.ravel().astype(float), ref.ravel())[0, 1]
        assert corr > 0.99, (path, corr)


def test_viewer_error_names_path_only(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all")
    with pytest.raises(viewer.ViewerError, match=str(bad)):
        viewer.load_viewer_image(bad)


# ------------------------------------------------------------------ worklist


def test_worklist_filters_sort_and_counts(store):
    table, total = logic.load_worklist(store, logic.WorklistFilters())
    assert total == 3 and list(table["priority"]) == [3, 2, 1]
    assert table.loc[0, "study"] == "PH0000" and table.loc[0, "flags"] >= 1
    assert logic.worklist_counts(store) == {"drafted": 3}
    flagged, n_flagged = logic.load_worklist(store, logic.WorklistFilters(flagged="flagged"))
    clean, n_clean = logic.load_worklist(store, logic.WorklistFilters(flagged="clean"))
    assert n_flagged + n_clean == 3 and "PH0000" in set(flagged["study"])
    asc, _ = logic.load_worklist(store, logic.WorklistFilters(sort_by="priority", descending=False))
    assert list(asc["priority"]) == [1, 2, 3]
    assert logic.load_worklist(store, logic.WorklistFilters(min_priority=2))[1] == 2
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    assert logic.load_worklist(store, logic.WorklistFilters(date_from=tomorrow))[1] == 0
    assert logic.load_worklist(store, logic.WorklistFilters(date_to=tomorrow))[1] == 3
    assert logic.load_worklist(store, logic.WorklistFilters(statuses=("signed",)))[1] == 0
    assert logic.load_worklist(store, logic.WorklistFilters(review=("signed",)))[1] == 0
    assert logic.load_worklist(store, logic.WorklistFilters(review=("unreviewed",)))[1] == 3
    with pytest.raises(ValueError, match="sort_by"):
        logic.load_worklist(store, logic.WorklistFilters(sort_by="name"))


# ------------------------------------------------------------------ review actions


def _first_uid(store) -> str:
    return str(logic.load_worklist(store, logic.WorklistFilters())[0].loc[0, "study_uid"])


def test_open_study_creates_first_version_and_audits(store):
    uid = _first_uid(store)
    detail = logic.open_study(store, RAD, uid)
    assert [v.version for v in detail.versions] == [1]
    assert detail.latest.findings == detail.draft.findings and SCRIPT_PROBE in detail.draft.findings
    assert [v for v, _ in detail.images][:1] == ["PA"] and all(p.is_file() for _, p in detail.images)
    assert any(s.confidence is not None for s in detail.draft.sentences) and detail.draft.flags
    logic.open_study(store, RAD, uid)  # idempotent: no second version
    assert len(reviews.list_versions(store, uid)) == 1
    events = _events(store)
    opens = [e for e in events if e.action == "study.open"]
    assert len(opens) == 2 and opens[0].actor == "rad" and uid not in opens[0].object_id


def test_only_radiologists_sign_and_refusals_are_audited(store):
    uid = _first_uid(store)
    v1 = logic.open_study(store, RAD, uid).latest
    with pytest.raises(logic.PermissionDenied, match="only radiologists"):
        logic.approve_text(store, RES, uid, v1.findings + " Edited.", v1.impression, expected_version=1)
    assert len(reviews.list_versions(store, uid)) == 1  # the refused approve saved nothing
    with pytest.raises(logic.PermissionDenied):
        logic.approve(store, auth.User("adm", "A", "admin"), uid)
    refused = [e for e in _events(store) if e.action == "study.sign" and e.outcome == "refused"]
    assert [e.actor for e in refused] == ["res", "adm"]


def test_edit_approve_sign_binds_hash_then_edit_reopens(store):
    uid = _first_uid(store)
    v1 = logic.open_study(store, RAD, uid).latest
    edited = v1.findings.replace("Mild interstitial pulmonary edema.", "Moderate interstitial pulmonary edema.")
    assert edited != v1.findings
    with pytest.raises(reviews.ReviewError, match="nothing changed"):
        logic.save_edit(store, RES, uid, v1.findings, v1.impression, expected_version=1)
    v2 = logic.save_edit(store, RES, uid, edited, v1.impression, expected_version=1)
    assert (v2.version, v2.status, v2.author) == (2, "draft", "res")
    with pytest.raises(reviews.ReviewError, match="changed while you were reading"):
        logic.approve(store, RAD, uid, expected_version=1)
    signed = logic.approve_text(store, RAD, uid, edited, v1.impression, expected_version=2)
    assert signed.version == 2 and signed.status == "signed"
    assert signed.signoff.signer == "rad" and signed.signoff.role == "radiologist"
    assert signed.signoff.bound_hash == reviews.content_hash(edited, v1.impression) == signed.content_hash
    assert reviews.verify_signoff(store, signed.id)
    assert logic.load_study(store, uid).status == "signed"
    with store.transaction() as s:
        assert s.query(Signoff).count() == 1
    with pytest.raises(reviews.ReviewError, match="already signed"):
        logic.approve(store, RAD, uid, expected_version=2)
    v3 = logic.save_edit(store, RAD, uid, edited + " Addendum.", v1.impression, expected_version=2)
    assert (v3.version, v3.status) == (3, "draft")
    assert logic.load_study(store, uid).status == "drafted"
    with store.transaction() as s:
        assert s.get(ReportVersion, signed.id).status == "signed"  # the signed version is untouched
    actions = [e.action for e in _events(store)]
    assert {"version.edit", "study.edit", "version.sign", "study.sign"} <= set(actions)
    with store.transaction() as s:
        assert verify_chain(s).ok


def test_reject_needs_reason(store):
    uid = _first_uid(store)
    logic.open_study(store, RES, uid)
    with pytest.raises(reviews.ReviewError, match="reason"):
        logic.reject(store, RES, uid, "  ")
    v = logic.reject(store, RES, uid, "wrong side", expected_version=1)
    assert v.status == "rejected" and v.rejection_reason == "wrong side"
    ev = [e for e in _events(store) if e.action == "study.reject"][0]
    assert "wrong side" not in str(ev.details)


def test_questions_stored_with_study(store):
    uid = _first_uid(store)
    logic.record_question(store, RAD, uid, "Is there an effusion?", "No.", "medvlm/demo")
    (qa,) = logic.load_study(store, uid).questions
    assert (qa.user, qa.question, qa.answer) == ("rad", "Is there an effusion?", "No.")


def test_stream_model_answer_streams_the_greedy_answer(store, tiny_bundle):
    from medvlm.generate import answer_question

    uid = _first_uid(store)
    detail = logic.load_study(store, uid)
    images = logic.model_images(detail, size=tiny_bundle.config.image_size)
    history = [logic.QAView("rad", "Any pneumothorax?", "No.", "m", datetime.now(UTC))]
    result = logic.StreamedAnswer()
    pieces = list(logic.stream_model_answer(tiny_bundle, images, "Is there a pleural effusion?", history, result))
    greedy = answer_question(tiny_bundle, images, "Is there a pleural effusion?", [("Any pneumothorax?", "No.")])
    assert result.pieces == pieces and result.text == "".join(pieces) == greedy.text
    assert result.confidence == pytest.approx(greedy.confidence, abs=1e-4)


def test_similar_cases_ranks_by_shared_findings(store):
    table, _ = logic.load_worklist(store, logic.WorklistFilters())
    uids = list(table["study_uid"])
    for uid in uids:  # sign every study
        v = logic.open_study(store, RAD, uid).latest
        logic.approve(store, RAD, uid, expected_version=v.version)
    cases = logic.similar_cases(store, "other", "Moderate right pneumothorax.")
    assert cases and "Pneumothorax" in cases[0].shared
    assert all(c.study_uid != "other" for c in cases)


def _sign(store, uid):
    v = logic.open_study(store, RAD, uid).latest
    logic.approve(store, RAD, uid, expected_version=v.version)


def test_frontal_image_prefers_pa_then_ap():
    images = [("LL", Path("l.dcm")), ("AP", Path("ap.dcm")), ("PA", Path("pa.dcm"))]
    assert logic.frontal_image(images) == Path("pa.dcm")
    assert logic.frontal_image(images[:2]) == Path("ap.dcm")
    assert logic.frontal_image(images[:1]) is None


def test_similar_cases_by_image(store, tiny_bundle, phantom_dir, tmp_path):
    uids = {json_id: uid for json_id, uid in _phantom_uids(phantom_dir)}
    query = uids["PH0000"]
    # A fourth study whose frontal is a byte copy of the query's (at another path): a perfect match.
    copy = tmp_path / "copy_pa.dcm"
    copy.write_bytes((phantom_dir / "PH0000" / "1_PA" / "1.dcm").read_bytes())
    twin = "1.2.826.0.1.3680043.8.498.1"
    logic.seed_study(store, study_uid=twin, source=str(tmp_path), metadata={
        "study_id": "TWIN", "images": [{"path": str(copy), "view": "PA"}]},
        findings="Twin findings.", impression="Twin impression.", sentences=[])
    for uid in (query, uids["PH0001"], twin):
        _sign(store, uid)
    logic.open_study(store, RAD, uids["PH0002"])  # a draft version, never signed: not a candidate
    candidates = logic.signed_case_candidates(store)
    frontal = logic.frontal_image(logic.load_study(store, query).images)
    assert {c.study_uid for c in candidates} == {query, uids["PH0001"], twin}
    cache: dict = {}
    cases = logic.similar_cases_by_image(tiny_bundle, query, frontal, candidates, k=10, cache=cache)
    assert [c.study_uid for c in cases] == [twin, uids["PH0001"]]  # itself excluded, unsigned PH0002 absent
    assert [c.label for c in cases] == ["TWIN", "PH0001"]
    assert (cases[0].findings, cases[0].impression) == ("Twin findings.", "Twin impression.")
    assert cases[0].score == pytest.approx(1.0, abs=1e-5)
    assert cases[1].score < cases[0].score - 1e-6
    assert len(cache) == 3  # query, its copy and PH0001's frontal, one entry per file
    again = logic.similar_cases_by_image(tiny_bundle, query, frontal, candidates, k=1, cache=cache)
    assert [(c.study_uid, c.score) for c in again] == [(twin, cases[0].score)] and len(cache) == 3
    # A candidate whose image is gone drops out; an unreadable query is a plain refusal.
    copy.unlink()
    cases = logic.similar_cases_by_image(tiny_bundle, query, frontal, candidates, k=10)
    assert [c.study_uid for c in cases] == [uids["PH0001"]]
    with pytest.raises(logic.ReviewError, match="frontal image cannot be read"):
        logic.similar_cases_by_image(tiny_bundle, twin, copy, candidates)


def _phantom_uids(phantom_dir):
    import json

    with open(phantom_dir / "reports.jsonl", encoding="utf-8") as fh:
        return [(r["study_id"], r["study_uid"]) for r in map(json.loads, fh)]


# ------------------------------------------------------------------ model page and command


def test_model_info_says_plainly_when_mlflow_absent(tmp_path):
    info = logic.model_info("medvlm/3", tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")
    assert not info.available and "MLflow" in info.message
    assert not (tmp_path / "none.db").exists()  # looking did not create a database
    assert not logic.model_info("").available
    assert logic.configured_model({}) is None and logic.configured_model({"MEDVLM_MODEL": "/m"}) == "/m"


def test_dashboard_command_argv_and_env(monkeypatch, capsys):
    from pipelines.launch import dashboard as dashboard_cmd

    argv = dashboard_cmd.dashboard_argv(8765)
    joined = " ".join(argv)
    for flag in ("--server.headless true", "--server.address 127.0.0.1", "--server.port 8765",
                 "--server.enableXsrfProtection true", "--server.maxUploadSize 10"):
        assert flag in joined
    assert argv[-1] != "" and Path(argv[4]).name == "app.py" and Path(argv[4]).is_file()
    seen = {}

    class FakeProc:
        def __init__(self, args, env):
            seen["args"], seen["env"] = args, env

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeProc)
    assert dashboard_cmd.dashboard_command("sqlite:////x.db", 8765, "127.0.0.1") == 0
    assert seen["env"]["MEDVLM_DATABASE_URL"] == "sqlite:////x.db"
    assert "http://127.0.0.1:8765/" in capsys.readouterr().out


def test_session_state_declared_once():
    state: dict = {}
    sess = logic.init_session(state)
    sess.page = "Study"
    assert logic.init_session(state) is sess and state[logic.SESSION_KEY].page == "Study"


def test_study_images_reads_the_batch_jobs_metadata_and_never_scans_the_folder(tmp_path):
    """A study shows its own files only: never other studies found in the same source folder."""
    from dashboard.logic import study_images

    for study in ("A", "B"):
        for view in ("1_PA", "2_LL"):
            (tmp_path / study / view).mkdir(parents=True)
            (tmp_path / study / view / "1.dcm").write_bytes(b"x")
    meta = {"files": [str(tmp_path / "A/2_LL/1.dcm"), str(tmp_path / "A/1_PA/1.dcm")], "views": ["LATERAL", "PA"]}
    images = study_images(str(tmp_path), meta)
    assert images == [("PA", tmp_path / "A/1_PA/1.dcm"), ("LATERAL", tmp_path / "A/2_LL/1.dcm")]
    assert study_images(str(tmp_path), {}) == []  # nothing recorded: nothing guessed


def test_no_users_file_means_no_login_not_the_public_demo_users():
    """A deployment that forgot MEDVLM_USERS_FILE must not accept the demo passwords."""
    from dashboard import auth

    with pytest.raises(auth.AuthError, match="MEDVLM_USERS_FILE"):
        auth.users_file_path(env={})
    assert auth.users_file_path(env={"MEDVLM_USERS_FILE": "/etc/medvlm/users.yaml"}) == Path("/etc/medvlm/users.yaml")
