"""Phantom studies: findings visible on the stated side, real DICOM, matching reports, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.phantoms import (
    CHEXPERT_OBSERVATIONS,
    KINDS,
    Finding,
    FindingsSpec,
    PhantomConfig,
    PhantomError,
    available_transfer_syntaxes,
    build_report,
    generate_phantoms,
    render_frontal,
    render_lateral,
    sample_spec,
    to_stored,
)

SIZE = 128


def _front(spec: FindingsSpec, seed: int = 5, size: int = SIZE) -> np.ndarray:
    return render_frontal(spec, size, np.random.default_rng(seed))


def _box(img: np.ndarray, v0: float, v1: float, u0: float, u1: float) -> float:
    h, w = img.shape
    return float(img[int(v0 * h) : int(v1 * h), int(u0 * w) : int(u1 * w)].mean())


NORMAL = FindingsSpec()


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(out, n=12, seed=3, progress=False, config=PhantomConfig(size=SIZE))
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "reports.jsonl").read_text(encoding="utf-8").splitlines()]


# --- rendering -------------------------------------------------------------------------------------


def test_render_range_dtype_and_anatomy():
    img = _front(NORMAL)
    assert img.shape == (SIZE, SIZE) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    lung = _box(img, 0.3, 0.5, 0.22, 0.32)  # patient right mid lung
    mediastinum = _box(img, 0.3, 0.5, 0.47, 0.53)
    outside = _box(img, 0.4, 0.6, 0.0, 0.015)
    assert lung < mediastinum - 0.15  # aerated lung is darker than the mediastinum
    assert outside < lung  # air outside the body is darkest
    lat = render_lateral(NORMAL, SIZE, np.random.default_rng(5))
    assert _box(lat, 0.3, 0.45, 0.45, 0.6) < _box(lat, 0.3, 0.45, 0.8, 0.88)  # lung darker than spine


def test_same_rng_same_image_and_patients_differ():
    np.testing.assert_array_equal(_front(NORMAL, 1), _front(NORMAL, 1))
    assert np.abs(_front(NORMAL, 1) - _front(NORMAL, 2)).mean() > 0.01


@pytest.mark.parametrize("side", ["right", "left"])
def test_effusion_brightens_the_stated_costophrenic_angle(side):
    eff = FindingsSpec((Finding("pleural_effusion", side=side, size="large"),))
    img, base = _front(eff), _front(NORMAL)
    right_cp = (0.58, 0.72, 0.14, 0.3)  # image left = patient right
    left_cp = (0.6, 0.74, 0.7, 0.86)
    stated, other = (right_cp, left_cp) if side == "right" else (left_cp, right_cp)
    assert _box(img, *stated) > _box(base, *stated) + 0.1
    assert abs(_box(img, *other) - _box(base, *other)) < 0.02
    small = _front(FindingsSpec((Finding("pleural_effusion", side=side, size="small"),)))
    upper = (0.45, 0.55, *stated[2:])  # a large effusion rises higher than a small one
    assert _box(img, *upper) > _box(small, *upper) + 0.05


def test_effusion_visible_on_lateral_posteriorly():
    eff = FindingsSpec((Finding("pleural_effusion", side="bilateral", size="large"),))
    rng = np.random.default_rng
    assert _box(render_lateral(eff, SIZE, rng(5)), 0.55, 0.7, 0.6, 0.75) > (
        _box(render_lateral(NORMAL, SIZE, rng(5)), 0.55, 0.7, 0.6, 0.75) + 0.08
    )


def test_cardiomegaly_widens_heart_shadow():
    cm = _front(FindingsSpec((Finding("cardiomegaly", size="moderate"),)))
    base = _front(NORMAL)
    band = (0.52, 0.6, 0.7, 0.78)  # just beyond a normal heart's left border (patient left)
    assert _box(cm, *band) > _box(base, *band) + 0.1

    def heart_fraction(img: np.ndarray) -> float:
        """Width of the dense run through the midline at heart level / a typical thoracic width."""
        row = img[int(0.55 * SIZE) - 2 : int(0.55 * SIZE) + 2].mean(axis=0)
        threshold = (_box(img, 0.31, 0.47, 0.22, 0.31) + row[SIZE // 2]) / 2
        left = right = SIZE // 2
        while left > 0 and row[left - 1] > threshold:
            left -= 1
        while right < SIZE - 1 and row[right + 1] > threshold:
            right += 1
        return (right - left + 1) / (0.74 * SIZE)

    assert 0.38 < heart_fraction(base) < 0.5  # a normal cardiothoracic ratio
    assert heart_fraction(cm) > heart_fraction(base) + 0.08


@pytest.mark.parametrize("side", ["right", "left"])
def test_pneumothorax_darkens_the_stated_apex_side(side):
    ptx = _front(FindingsSpec((Finding("pneumothorax", side=side, size="large"),)))
    base = _front(NORMAL)
    diff = base - ptx  # positive where the pneumothorax is more lucent
    h, w = diff.shape
    right_half, left_half = diff[: h // 2, : w // 2], diff[: h // 2, w // 2 :]
    stated, other = (right_half, left_half) if side == "right" else (left_half, right_half)
    assert stated.mean() > 0.005
    assert stated.mean() > 4 * abs(other.mean())


@pytest.mark.parametrize(
    "finding",
    [
        Finding("nodule", side="left", zone="upper", size_mm=45.0),
        Finding("consolidation", side="right", zone="right lower lobe"),
        Finding("atelectasis", side="left", zone="lower"),
    ],
    ids=["nodule-left", "consolidation-right", "atelectasis-left"],
)
def test_focal_finding_goes_to_the_stated_image_half(finding):
    diff = _front(FindingsSpec((finding,))) - _front(NORMAL)
    half = diff.shape[1] // 2
    image_left, image_right = np.clip(diff[:, :half], 0, None).sum(), np.clip(diff[:, half:], 0, None).sum()
    if finding.side == "left":  # patient left = image right
        assert image_right > 3 * image_left
    else:
        assert image_left > 3 * image_right


def test_edema_bilateral_and_devices_bright():
    edema = _front(FindingsSpec((Finding("edema", size="moderate"),))) - _front(NORMAL)
    half = SIZE // 2
    assert edema[:, :half].mean() > 0.01 and edema[:, half:].mean() > 0.01
    dev = _front(FindingsSpec((Finding("support_devices", devices=("pacemaker",)),)))
    assert _box(dev, 0.12, 0.24, 0.7, 0.8) > _box(_front(NORMAL), 0.12, 0.24, 0.7, 0.8) + 0.1


# --- spec, labels, reports -----------------------------------------------------------------------


def test_spec_validation_and_roundtrip():
    with pytest.raises(ValueError, match="side"):
        Finding("pleural_effusion", side="middle", size="large")
    with pytest.raises(ValueError, match="kind"):
        Finding("fracture")
    rng = np.random.default_rng(0)
    specs = [sample_spec(rng) for _ in range(400)]
    counts = [len(s.findings) for s in specs]
    assert set(counts) == {0, 1, 2} and counts.count(2) < counts.count(1)
    seen = {k for s in specs for k in s.kinds}
    assert seen == set(KINDS)
    for s in specs[:50]:
        assert FindingsSpec.from_dict(json.loads(json.dumps(s.as_dict()))) == s


def test_labels_follow_chexpert_names():
    spec = FindingsSpec(
        (
            Finding("consolidation", side="left", zone="lingula"),
            Finding("support_devices", devices=("pacemaker",)),
        )
    )
    assert spec.labels() == {
        "Lung Opacity": "positive",
        "Consolidation": "positive",
        "Support Devices": "positive",
    }
    assert FindingsSpec().labels() == {"No Finding": "positive"}
    devices_only = FindingsSpec((Finding("support_devices", devices=("central_line",)),))
    assert devices_only.labels() == {"No Finding": "positive", "Support Devices": "positive"}
    assert set(spec.labels()) <= set(CHEXPERT_OBSERVATIONS)


def test_report_mentions_finding_side_and_negatives():
    rng = np.random.default_rng(1)
    findings, impression = build_report(
        FindingsSpec((Finding("pleural_effusion", side="left", size="moderate"),)), rng
    )
    assert "left pleural effusion" in findings.lower() and "moderate" in findings.lower()
    assert "pneumothorax" in findings.lower()  # negated explicitly
    assert "left pleural effusion" in impression.lower()
    findings, impression = build_report(FindingsSpec(), rng)
    assert (
        "no pleural effusion" in findings.lower() or "no pneumothorax or pleural effusion" in findings.lower()
    )
    assert impression.startswith("No acute cardiopulmonary")
    findings, impression = build_report(
        FindingsSpec((Finding("consolidation", side="right", zone="right upper lobe"),)), rng
    )
    assert "right upper lobe" in findings.lower() and "consolidation" in impression.lower()


# --- DICOM set -----------------------------------------------------------------------------------


def test_to_stored_inverts_for_monochrome1():
    img = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    m2, m1 = to_stored(img, 12, "MONOCHROME2"), to_stored(img, 12, "MONOCHROME1")
    np.testing.assert_array_equal(m1.astype(int), 4095 - m2.astype(int))
    with pytest.raises(ValueError):
        to_stored(img, 12, "RGB")


def test_files_decode_for_every_transfer_syntax(phantom_set):
    import pydicom

    records = _records(phantom_set)
    assert len(records) == 12
    seen_ts, seen_pi = set(), set()
    for rec in records:
        assert len(rec["views"]) == 2 and {v["view"] for v in rec["views"]} - {"PA", "AP"} == {"LL"}
        for view in rec["views"]:
            ds = pydicom.dcmread(phantom_set / view["path"])
            arr = ds.pixel_array
            assert arr.shape == (SIZE, SIZE) and arr.max() <= (1 << ds.BitsStored) - 1
            assert ds.BodyPartExamined == "CHEST" and ds.Modality in ("CR", "DX")
            assert ds.SOPClassUID in ("1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1")
            assert ds.StudyInstanceUID == rec["study_uid"] and ds.SOPInstanceUID == view["sop_uid"]
            assert str(ds.PatientName).startswith("PHANTOM^") and ds.PatientID == rec["study_id"]
            assert "WindowCenter" in ds and "WindowWidth" in ds and "PixelSpacing" in ds
            seen_ts.add(str(ds.file_meta.TransferSyntaxUID))
            seen_pi.add(ds.PhotometricInterpretation)
            # Display orientation: the mediastinum (frontal) is denser than the lungs; MONOCHROME1
            # stores dense as LOW values, MONOCHROME2 as HIGH.
            if view["view"] != "LL":
                centre = arr[40:60, 61:67].astype(float).mean()
                lung = arr[40:60, 28:40].astype(float).mean()
                assert (centre < lung) if ds.PhotometricInterpretation == "MONOCHROME1" else (centre > lung)
    assert seen_ts == set(available_transfer_syntaxes())
    assert len(seen_ts) >= 3
    assert seen_pi == {"MONOCHROME1", "MONOCHROME2"}


def test_reports_jsonl_matches_spec(phantom_set):
    for rec in _records(phantom_set):
        spec = FindingsSpec.from_dict(rec["spec"])
        assert rec["labels"] == spec.labels()
        assert rec["split"] in ("train", "val", "test")
        assert rec["indication"] and rec["findings"] and rec["impression"]
        text = (rec["findings"] + " " + rec["impression"]).lower()
        assert "xxxx" not in text
        for f in spec.findings:
            if f.side in ("left", "right"):
                assert f.side in text
        if not spec.findings:
            assert "no acute cardiopulmonary" in rec["impression"].lower()


def _tree_hash(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_byte_identical_and_seeds_differ(tmp_path):
    cfg = PhantomConfig(size=64)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    summary = generate_phantoms(a, n=6, seed=11, progress=False, config=cfg)
    generate_phantoms(b, n=6, seed=11, progress=False, config=cfg)
    generate_phantoms(c, n=6, seed=12, progress=False, config=cfg)
    ha, hb, hc = _tree_hash(a), _tree_hash(b), _tree_hash(c)
    assert ha == hb and len(ha) == 13
    assert ha["reports.jsonl"] != hc["reports.jsonl"]
    assert set(ha.values()).isdisjoint(hc.values())
    d = summary.as_dict()
    assert d["studies"] == 6 and d["images"] == 12 and sum(d["transfer_syntaxes"].values()) == 12


def test_cli_phantoms(tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["phantoms", "--out", str(out), "--n", "4", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(_records(out)) == 4
    assert len(list(out.rglob("*.dcm"))) == 8


def test_out_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError):
        generate_phantoms(f, n=1, seed=0, progress=False)


def test_errors_are_typed_and_still_value_errors(tmp_path):
    """Bad input raises PhantomError: a PipelineError (one line in the CLI) that callers may catch as ValueError."""
    from pipelines.errors import PipelineError

    assert issubclass(PhantomError, PipelineError) and issubclass(PhantomError, ValueError)
    with pytest.raises(PhantomError, match="size_mm"):
        Finding("nodule", side="left", zone="upper", size_mm=1.0)
    with pytest.raises(PhantomError, match="size"):
        PhantomConfig(size=16)
    with pytest.raises(PhantomError, match="32x32"):
        render_lateral(NORMAL, 20)
    with pytest.raises(PhantomError, match="bits_stored"):
        to_stored(np.zeros((4, 4)), 20, "MONOCHROME2")
    with pytest.raises(PhantomError, match="n must be"):
        generate_phantoms(tmp_path / "none", n=0, seed=0, progress=False)
