"""The input gate on real paediatric chest radiographs (Kermany, PNG/JPEG without DICOM headers)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dicom_io.errors import NotAChestRadiograph
from dicom_io.gate import load_chest_image


def _kermany(shared_data: Path) -> Path:
    folder = shared_data / "kermany"
    if not folder.is_dir():
        pytest.skip(f"{folder} absent: the Kermany radiographs are not in the shared data")
    return folder


def acceptance(paths: list[Path]) -> tuple[int, int]:
    """(accepted, unique) over the unique files of `paths` (byte-identical copies counted once, as ingest does)."""
    seen, accepted = set(), 0
    for p in paths:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        try:
            pixels, meta = load_chest_image(p, size=64)
        except NotAChestRadiograph:
            continue
        accepted += int(pixels.shape == (64, 64) and not meta.has_dicom_metadata)
    return accepted, len(seen)


def test_a_sample_of_each_class_is_accepted(shared_data):
    kermany = _kermany(shared_data)
    sample = [p for cls in ("NORMAL", "PNEUMONIA") for p in sorted((kermany / cls).glob("*.jpeg"))[::200]]
    accepted, unique = acceptance(sample)
    assert unique >= 20 and accepted == unique


def test_a_tiny_crop_of_a_real_radiograph_is_still_rejected(shared_data, tmp_path):
    from PIL import Image

    source = sorted((_kermany(shared_data) / "NORMAL").glob("*.jpeg"))[0]
    with Image.open(source) as img:
        img.resize((48, 48)).save(tmp_path / "thumb.png")
    with pytest.raises(NotAChestRadiograph, match="smaller than"):
        load_chest_image(tmp_path / "thumb.png")


@pytest.mark.slow
def test_at_least_99_percent_of_all_unique_images_are_accepted(shared_data):
    kermany = _kermany(shared_data)
    accepted, unique = acceptance(sorted(kermany.rglob("*.jpeg")))
    print(f"kermany gate: {accepted}/{unique} unique images accepted ({accepted / unique:.4f})")
    assert accepted / unique >= 0.99
