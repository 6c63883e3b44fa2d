"""FolderSource (one scan and watched) and the shared source helpers, without any server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_io.sources import (
    FOLDER,
    FolderSource,
    PacsError,
    SourceError,
    dicom_date_range,
    group_files,
    safe_dirname,
    study_key_of,
)


def test_folder_source_groups_files_by_study_with_stable_keys(tmp_path, make_chest_dicom):
    root = tmp_path / "in"
    uid_a, uid_b = generate_uid(), generate_uid()
    make_chest_dicom("a/pa.dcm", study_uid=uid_a, folder=root)
    make_chest_dicom("a/lat.dcm", study_uid=uid_a, folder=root, view="LL")
    make_chest_dicom("b/deep/x.dcm", study_uid=uid_b, folder=root)
    (root / "notes.txt").write_text("not dicom")
    (root / ".hidden.dcm").write_bytes(b"ignored")

    studies = list(FolderSource(root).studies())

    by_key = {s.study_key: s for s in studies}
    assert set(by_key) == {uid_a, uid_b, study_key_of(root / "notes.txt", root.resolve())}
    assert [p.name for p in by_key[uid_a].files] == ["lat.dcm", "pa.dcm"]
    assert all(s.source == FOLDER for s in studies)
    # The non-DICOM file still reaches the job (to be quarantined), under a path-derived key
    # that does not depend on where the folder lives.
    junk_key = study_key_of(root / "notes.txt", root.resolve())
    assert junk_key.startswith("file-")
    moved = tmp_path / "moved"
    root.rename(moved)
    assert {s.study_key for s in FolderSource(moved).studies()} == {uid_a, uid_b, junk_key}


def test_folder_source_rejects_missing_folder_and_endless_watch(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(tmp_path / "nope")
    with pytest.raises(SourceError, match="needs an end"):
        FolderSource(tmp_path, watch=True, idle_timeout_s=None)


class _ScriptedStop(threading.Event):
    """A stop event whose wait() runs the next scripted change to the folder instead of sleeping."""

    def __init__(self, actions):
        super().__init__()
        self.actions = list(actions)
        self.polls = 0

    def wait(self, timeout=None):
        self.polls += 1
        if self.actions:
            self.actions.pop(0)()
        else:
            self.set()
        return self.is_set()


def test_watch_yields_only_size_stable_files_and_holds_back_a_busy_study(tmp_path, make_chest_dicom):
    root = tmp_path / "watch"
    uid_x, uid_y = generate_uid(), generate_uid()
    make_chest_dicom("x1.dcm", study_uid=uid_x, folder=root)
    full = make_chest_dicom("x2_full.dcm", study_uid=uid_x, folder=tmp_path)
    data = full.read_bytes()
    x2 = root / "x2.dcm"
    x2.write_bytes(data[: len(data) // 2])          # still being copied
    make_chest_dicom("y1.dcm", study_uid=uid_y, folder=root)
    seen: list[tuple[int, str, tuple[str, ...]]] = []
    late = tmp_path / "late.dcm"

    stop = _ScriptedStop([
        lambda: x2.write_bytes(data),                # poll 1 -> 2: x2 grows to its full size
        lambda: None,                                 # poll 2 -> 3: nothing changes
        lambda: late.rename(root / "late.dcm"),       # poll 3 -> 4: a new file of study Y arrives
        lambda: None,
    ])
    make_chest_dicom("late.dcm", study_uid=uid_y, folder=tmp_path)
    source = FolderSource(root, watch=True, interval_s=0.01, stop=stop, max_polls=20)
    for study in source.studies():
        seen.append((stop.polls, study.study_key, tuple(p.name for p in study.files)))

    # Poll 2 (after 1 wait): y1 is stable; x1 is stable but x2 changed, so study X waits.
    # Poll 3: X goes out whole. Poll 5: the late Y file, again under Y's key, alone.
    assert seen == [(1, uid_y, ("y1.dcm",)), (2, uid_x, ("x1.dcm", "x2.dcm")), (4, uid_y, ("late.dcm",))]


def test_watch_ends_after_idle_timeout(tmp_path, make_chest_dicom):
    make_chest_dicom("a.dcm", folder=tmp_path)
    studies = list(FolderSource(tmp_path, watch=True, interval_s=0.02, idle_timeout_s=0.1).studies())
    assert len(studies) == 1 and studies[0].files[0].name == "a.dcm"


def test_group_files_and_helpers(tmp_path, make_chest_dicom):
    uid = generate_uid()
    files = [make_chest_dicom(f"{i}.dcm", study_uid=uid) for i in range(3)]
    (study,) = group_files(reversed(files), "x")
    assert study.study_key == uid and list(study.files) == sorted(files)
    assert safe_dirname("1.2.3") == "1.2.3" and safe_dirname("../etc") == ".._etc"
    assert dicom_date_range("20240101", "20240131") == "20240101-20240131"
    assert dicom_date_range("20240101", None) == "20240101-"
    assert dicom_date_range(None, None) is None
    with pytest.raises(SourceError, match="reversed"):
        dicom_date_range("20240201", "20240101")
    with pytest.raises(SourceError, match="YYYYMMDD"):
        dicom_date_range("2024-01-01", None)


def test_pacs_errors_are_typed_and_carry_a_record():
    err = PacsError("127.0.0.1:104", "association rejected", "check the AE title")
    assert err.as_record()["code"] == "pacs_error"
    assert "127.0.0.1:104" in str(err) and "check the AE title" in str(err)


def test_pacs_modules_import_lightly():
    import subprocess
    import sys

    # Importing the package and every PACS/SR module pulls in none of the network or SR libraries.
    code = ("import sys, dicom_io, dicom_io.sources, dicom_io.dicomweb, dicom_io.dimse, dicom_io.sr, "
            "dicom_io.fhir, dicom_io.sinks; "
            "print([m for m in ('pynetdicom', 'dicomweb_client', 'highdicom') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "[]"
