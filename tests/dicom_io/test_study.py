"""Views from headers, PHI-free metadata, grouping into study -> series -> image, JSON round trip."""

from __future__ import annotations

import json

import pytest
from pydicom.dataset import Dataset

from dicom_io.reader import header_meta, read
from dicom_io.study import (
    AP,
    LATERAL,
    PA,
    UNKNOWN,
    DuplicateInstance,
    ImageMeta,
    Study,
    group_studies,
    view_from_dataset,
    view_from_text,
)


def _ds(**elements) -> Dataset:
    ds = Dataset()
    for key, value in elements.items():
        setattr(ds, key, value)
    return ds


def _code(value: str, scheme: str = "SCT") -> Dataset:
    return _ds(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning="x")


@pytest.mark.parametrize(("elements", "view"), [
    ({"ViewPosition": "PA"}, PA),
    ({"ViewPosition": "AP"}, AP),
    ({"ViewPosition": "LL"}, LATERAL),
    ({"ViewPosition": "RL"}, LATERAL),
    ({"ViewCodeSequence": [_code("272479007")]}, PA),
    ({"ViewCodeSequence": [_code("R-10206", "SRT")]}, AP),
    ({"ViewCodeSequence": [_code("399173006")]}, LATERAL),
    ({"ViewPosition": "", "ViewCodeSequence": [_code("399198007")]}, LATERAL),
    ({"SeriesDescription": "view: PA"}, PA),
    ({"SeriesDescription": "CHEST LATERAL"}, LATERAL),
    ({"SeriesDescription": "PA AND LAT", "ProtocolName": "Thorax a.p."}, AP),  # two views named: skipped
    ({"SeriesDescription": "PA AND LAT"}, UNKNOWN),
    ({"SeriesDescription": "CAPITAL"}, UNKNOWN),  # "AP" inside a word does not count
    ({}, UNKNOWN),
])
def test_view_rules(elements, view):
    assert view_from_dataset(_ds(**elements)) == view


def test_view_position_wins_over_descriptions():
    assert view_from_dataset(_ds(ViewPosition="AP", SeriesDescription="PA chest")) == AP
    assert view_from_text(None) == UNKNOWN


def test_real_headers(pydicom_data_file, shared_data):
    rg1 = header_meta(read(pydicom_data_file("RG1_UNCI.dcm")))
    assert (rg1.modality, rg1.body_part, rg1.view, rg1.photometric_interpretation) == ("CR", "CHEST", PA, "MONOCHROME1")
    assert rg1.original_shape == (1955, 1841)
    shared = header_meta(read(shared_data / "dicom" / "rsna_chest_pa_jpeg_baseline.dcm"))
    assert shared.view == PA and shared.pixel_spacing is not None
    assert "Patient" not in " ".join(f.upper() for f in shared.to_dict())


def _meta(sop, study="1.1", series="1.1.1", instance=None, series_number=None, view=UNKNOWN) -> ImageMeta:
    return ImageMeta(source_path=f"/data/{sop}.dcm", study_uid=study, series_uid=series, sop_uid=sop,
                     modality="CR", view=view, original_shape=(10, 10), instance_number=instance,
                     series_number=series_number)


def test_grouping_is_deterministic_and_round_trips():
    metas = [
        _meta("9", study="2.2", series="2.2.1"),
        _meta("3", series="1.1.2", series_number=2, view=LATERAL),
        _meta("2", instance=2, series_number=1, view=PA),
        _meta("1", instance=1, series_number=1, view=PA),
    ]
    studies = group_studies(metas)
    assert [s.study_uid for s in studies] == ["1.1", "2.2"]
    first = studies[0]
    assert [s.series_uid for s in first.series] == ["1.1.1", "1.1.2"]
    assert [m.sop_uid for m in first.images] == ["1", "2", "3"]
    assert first.views == (PA, PA, LATERAL)
    assert group_studies(reversed(metas)) == studies
    text = json.dumps(first.to_dict(root="/data"))
    back = Study.from_dict(json.loads(text))
    assert back == first
    assert json.loads(text)["series"][0]["images"][0]["relative_path"] == "1.dcm"


def test_duplicate_sop_uid_is_a_typed_error():
    with pytest.raises(DuplicateInstance) as info:
        group_studies([_meta("1"), _meta("1")])
    assert info.value.code == "duplicate"


def test_meta_dict_round_trip():
    meta = ImageMeta(source_path="/x.dcm", study_uid="1", series_uid="2", sop_uid="3", pixel_spacing=(0.1, 0.2),
                     original_shape=(5, 6), window="window")
    assert ImageMeta.from_dict(json.loads(json.dumps(meta.to_dict())) | {"extra": 1}) == meta
