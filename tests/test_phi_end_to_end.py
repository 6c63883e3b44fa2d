"""PHI end to end: studies seeded with identifiers go through ingest and a tracked training run,
and no identifier comes out anywhere but in the input files themselves.

What is searched (as bytes, case-insensitively): every file the run writes (ingest outputs, the
run folder with checkpoints, evaluation and model card, the MLflow SQLite store and its artifact
folder), the log records, the warnings, stdout/stderr and the output of the ``medvlm ingest`` CLI.

Decision on file names: one corrupt input is *named* with PHI, as a careless export would be. The
quarantine record must name the file so that the operator can find it, so PHI may appear in the
record's ``path`` and ``relative_path`` fields, which are the operator's own paths; in no other
field (``code``, ``error``, ``detail``, ``hint``, ``stored_file``), and the copy kept under
``quarantine/files/`` is named by a hash. That copy (like the input folder) is the operator's
data and is not searched. Every other input file name here is free of PHI.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PHI = {
    "PatientName": "DOE^JANE^Q",
    "PatientID": "MRN-8675309-X",
    "AccessionNumber": "ACC-5551212",
    "InstitutionName": "St Elsewhere Mercy Hospital",
    "ReferringPhysicianName": "HOUSE^GREGORY^M",
}
# Fragments searched for: each value, and the parts a formatter could split it into.
NEEDLES = ("doe^jane", "doe jane", "jane^q", "8675309", "5551212", "elsewhere mercy", "house^gregory",
           "gregory")
PHI_FILE_NAME = "DOE_JANE_Q-MRN-8675309-X.dcm"


def _hits(data: bytes | str) -> list[str]:
    text = data.lower() if isinstance(data, str) else data.decode("latin-1").lower()
    return [n for n in NEEDLES if n in text]


def _seed_studies(src: Path) -> None:
    """Four phantom studies with PHI in every header, plus three bad files that carry PHI."""
    import pydicom

    from pipelines.phantoms import PhantomConfig, generate_phantoms

    generate_phantoms(src, n=4, seed=0, config=PhantomConfig(size=64), progress=False)
    files = sorted(src.rglob("*.dcm"))
    for path in files:
        ds = pydicom.dcmread(path)
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    first = files[0].read_bytes()
    assert _hits(first), "seeding failed: no PHI in the rewritten header"
    bad = src / "bad"
    bad.mkdir()
    # 1. Truncated after the header (PHI inside), and NAMED with PHI.
    (bad / PHI_FILE_NAME).write_bytes(first[: first.index(b"\xe0\x7f\x10\x00")])  # cut at (7FE0,0010)
    # 2. Not DICOM at all: a text export with identifiers in it.
    (bad / "export.dcm").write_text(f"PatientName={PHI['PatientName']} PatientID={PHI['PatientID']}\n")
    # 3. A real DICOM the gate refuses, with identifiers in the free-text descriptions it reads.
    ds = pydicom.dcmread(files[0])
    del ds.BodyPartExamined
    ds.StudyDescription = f"HEAD {PHI['PatientName']} {PHI['PatientID']}"
    ds.SeriesDescription = f"SKULL {PHI['ReferringPhysicianName']}"
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["phi-e2e"])
    ds.save_as(bad / "head.dcm")


@pytest.mark.slow
def test_phi_never_leaves_the_input_files(tmp_path, monkeypatch, caplog, capsys):
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.intake.ingest import QUARANTINE_DIR, STUDIES_FILE, run_ingest
    from pipelines.recipes.train import train_command

    monkeypatch.setenv("MEDVLM_VAR_DIR", str(tmp_path / "var"))  # nothing may fall back to ./var
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    caplog.set_level(logging.DEBUG)
    src = tmp_path / "src"
    _seed_studies(src)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_ingest(src, tmp_path / "ingest", progress=False)
        cli = CliRunner().invoke(app, ["ingest", str(src), "--out", str(tmp_path / "ingest_cli")])
        result = train_command(ROOT / "pipelines" / "configs" / "train_tiny.yaml", [
            f"data.dir={src}", f"out_dir={tmp_path / 'run'}", "tracking=mlflow",
            f"tracking_uri=sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", "register=true",
            "contrastive.steps=1", "projector.steps=1", "lora.steps=1", "evaluate.max_studies=2",
        ])

    # The pipeline really ran: studies accepted, bad files quarantined, a version registered.
    assert cli.exit_code == 0, cli.output
    assert summary.studies == 4 and summary.images_accepted == 8
    # reports.jsonl is not DICOM either, hence two `unreadable`.
    assert summary.by_reason == {"bad_pixel_data": 1, "not_chest_radiograph": 1, "unreadable": 2}
    assert result["registry"]["version"]
    mlflow_dir = tmp_path / "mlflow"
    store_files = [p for p in mlflow_dir.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in store_files) and len(store_files) > 3, "no artifacts logged"
    assert not (tmp_path / "var").exists() or all(not _hits(p.read_bytes())
                                                  for p in (tmp_path / "var").rglob("*") if p.is_file())

    # Quarantine records: PHI only in the operator's own path fields, and only for the PHI-named file.
    for out in ("ingest", "ingest_cli"):
        records = [json.loads(f.read_text(encoding="utf-8"))
                   for f in sorted((tmp_path / out / QUARANTINE_DIR).glob("*.json"))]
        assert len(records) == summary.quarantined
        named = [r for r in records if r["relative_path"] == f"bad/{PHI_FILE_NAME}"]
        assert len(named) == 1 and _hits(named[0]["path"]), "the PHI-named file must be found by its path"
        for record in records:
            for key, value in record.items():
                if key in ("path", "relative_path") and record is named[0]:
                    continue
                found = _hits(json.dumps(value))
                assert not found, f"{out}: PHI {found} in quarantine field {key!r} ({record['code']})"
        stored = [p.name for p in (tmp_path / out / QUARANTINE_DIR / "files").iterdir()]
        assert stored and not [name for name in stored if _hits(name)]
        assert not _hits((tmp_path / out / STUDIES_FILE).read_bytes())

    # Every other file the run wrote, searched as bytes.
    leaks = []
    for path in sorted(tmp_path.rglob("*")):
        rel = path.relative_to(tmp_path)
        if not path.is_file() or rel.parts[0] == "src" or path.parent.name == QUARANTINE_DIR or \
                (path.parent.name == "files" and path.parent.parent.name == QUARANTINE_DIR):
            continue
        if found := _hits(path.read_bytes()):
            leaks.append(f"{rel}: {found}")
    assert not leaks, "PHI in outputs:\n" + "\n".join(leaks)

    # Logs, warnings, console and CLI output.
    captured = capsys.readouterr()
    assert caplog.records, "no log records captured: the search would prove nothing"
    for name, text in (("logs", caplog.text), ("stdout", captured.out), ("stderr", captured.err),
                       ("cli", cli.output), ("warnings", "\n".join(str(w.message) for w in caught))):
        assert not _hits(text), f"PHI {_hits(text)} in {name}"
