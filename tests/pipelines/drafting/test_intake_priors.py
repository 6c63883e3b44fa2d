"""Intake links a study to the same patient's earlier study: phantom studies rewritten to share a Patient ID."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from pipelines.drafting.identity import DraftOptions, ModelIdentity
from pipelines.drafting.intake import IntakeStats, intake_study, prepare_study
from pipelines.store import open_store
from pipelines.store.priors import find_prior, prior_study

IDENT = ModelIdentity(checkpoint="(fake)", model_version="m1", prompt_hash="p", adapter_hash=None, image_size=32)
PATIENT = "PAT-SHARED-0042"


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> list[tuple[str, list[Path]]]:
    """Three phantom studies: the first two share a Patient ID, a year apart; the third has a blank ID."""
    from pipelines.phantoms import PhantomConfig, generate_phantoms

    out = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(out, n=3, seed=5, progress=False, config=PhantomConfig(size=64))
    rewrites = [(PATIENT, "20230310", "091500"), (PATIENT, "20240310", "084500"), ("", "20250310", "080000")]
    found = []
    for folder, (pid, date, time) in zip(sorted(p for p in out.iterdir() if p.is_dir()), rewrites, strict=True):
        files = sorted(folder.rglob("*.dcm"))
        for f in files:
            ds = pydicom.dcmread(f)
            ds.PatientID, ds.StudyDate, ds.StudyTime = pid, date, time
            ds.save_as(f)
        found.append((str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), files))
    return found


def test_intake_links_the_later_study_to_the_earlier_one(studies, tmp_path):
    (earlier, earlier_files), (later, later_files), (blank, blank_files) = studies
    prepared = prepare_study(later, later_files)
    assert prepared.patient is not None and prepared.patient.patient_id == PATIENT
    assert PATIENT not in repr(prepared) and PATIENT not in repr(prepared.metadata)  # PHI stays out of logs
    with open_store(f"sqlite:///{tmp_path / 'store.db'}", audit_key=b"k") as store:
        stats = IntakeStats()
        for uid, files in ((later, later_files), (earlier, earlier_files), (blank, blank_files)):  # any order
            assert intake_study(store, uid, files, IDENT, DraftOptions(), source="phantoms", stats=stats) == "queued"
        assert prior_study(store, later) == earlier
        assert find_prior(store, later).date == "2023-03-10"
        assert prior_study(store, earlier) is None
        assert prior_study(store, blank) is None  # a blank Patient ID links to nobody, though it is later
        # a second run refreshes the link of a known study (the job is queued: "resumed")
        assert intake_study(store, later, later_files, IDENT, DraftOptions(), source="phantoms",
                            stats=stats) == "resumed"
        assert prior_study(store, later) == earlier
    assert PATIENT.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("store.db*"))
