"""Input gate: chest CR/DX in; other modalities, body parts and thumbnails out, with the reason."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicom_io.errors import NotAChestRadiograph
from dicom_io.gate import check_chest_radiograph, check_dataset, descriptions, load_chest_image
from dicom_io.reader import header_meta, read
from dicom_io.study import ImageMeta


def _check(path):
    ds = read(path, stop_before_pixels=True)
    check_dataset(ds, header_meta(ds, path))


@pytest.mark.parametrize("name", ["RG1_UNCI.dcm", "RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"])
def test_rg1_chest_is_accepted(pydicom_data_file, name):
    _check(pydicom_data_file(name))


@pytest.mark.parametrize("name", ["RG3_UNCI.dcm", "RG3_UNCR.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm"])
def test_rg3_tibia_is_rejected(pydicom_data_file, name):
    with pytest.raises(NotAChestRadiograph, match="body part EXTREMITY") as info:
        _check(pydicom_data_file(name))
    assert info.value.code == "not_chest_radiograph"
    assert "fibroma" not in str(info.value).lower()  # free-text descriptions never reach the message


def test_ct_is_rejected(pydicom_data_file):
    with pytest.raises(NotAChestRadiograph, match="modality CT"):
        _check(pydicom_data_file("CT_small.dcm"))


def test_shared_chest_files_are_accepted(shared_data):
    files = sorted((shared_data / "dicom").glob("*.dcm"))
    assert len(files) == 2
    for path in files:
        _check(path)


def _meta(**kw) -> ImageMeta:
    base = {"source_path": "/x.dcm", "study_uid": "1", "series_uid": "2", "sop_uid": "3", "modality": "DX",
            "original_shape": (512, 512)}
    return ImageMeta(**(base | kw))


def test_absent_body_part_rule():
    check_chest_radiograph(_meta())  # nothing says otherwise: accepted
    check_chest_radiograph(_meta(), ["XR CHEST 2 VIEWS"])
    check_chest_radiograph(_meta(), ["Knee and chest"])  # names the chest too: accepted
    with pytest.raises(NotAChestRadiograph, match="descriptions name KNEE"):
        check_chest_radiograph(_meta(), ["XR KNEE LEFT"])
    with pytest.raises(NotAChestRadiograph, match="ABDOMEN"):
        check_chest_radiograph(_meta(body_part=None), ["Abdomen supine"])


def test_body_part_and_modality_and_size():
    check_chest_radiograph(_meta(body_part="THORAX"))
    check_chest_radiograph(_meta(body_part="CHEST_PA"))
    check_chest_radiograph(_meta(modality="CR", body_part="CHEST"), ["KNEE"])  # present body part decides
    with pytest.raises(NotAChestRadiograph, match="body part SKULL"):
        check_chest_radiograph(_meta(body_part="SKULL"))
    for modality in ("MR", "US", None):
        with pytest.raises(NotAChestRadiograph, match="modality"):
            check_chest_radiograph(_meta(modality=modality))
    with pytest.raises(NotAChestRadiograph, match="smaller than 64"):
        check_chest_radiograph(_meta(original_shape=(32, 512)))


def test_images_without_dicom_metadata_only_need_a_size():
    check_chest_radiograph(_meta(modality=None, has_dicom_metadata=False))
    with pytest.raises(NotAChestRadiograph):
        check_chest_radiograph(_meta(modality=None, has_dicom_metadata=False, original_shape=(16, 16)))


def test_descriptions_are_collected():
    ds = Dataset()
    ds.StudyDescription = "CHEST"
    ds.ProtocolName = "PA"
    assert descriptions(ds) == ("CHEST", "PA")


def test_load_chest_image_gates_before_decoding_and_resizes(pydicom_data_file, tmp_path):
    from dicom_io.errors import PixelDataError
    from dicom_io.study import MissingUID

    pixels, meta = load_chest_image(pydicom_data_file("RG1_UNCR.dcm"), size=224)
    assert pixels.shape == (224, 224) and meta.view == "PA"
    with pytest.raises(NotAChestRadiograph):
        load_chest_image(pydicom_data_file("RG3_UNCR.dcm"))
    ds = read(pydicom_data_file("RG1_UNCR.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "no_pixels.dcm")
    with pytest.raises(PixelDataError, match="no pixel data"):
        load_chest_image(tmp_path / "no_pixels.dcm")
    ds = read(pydicom_data_file("RG1_UNCR.dcm"))
    del ds.SeriesInstanceUID
    ds.save_as(tmp_path / "no_series.dcm")
    with pytest.raises(MissingUID):
        load_chest_image(tmp_path / "no_series.dcm")
