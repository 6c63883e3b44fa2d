"""De-identification of real files: no PHI value survives in the written bytes; UIDs, pixels, flags.

PHI search rule (documented here because the tests depend on it): from the ORIGINAL file we collect
the string value of every element the recipe removes, empties, replaces or remaps (at any depth,
inside removed sequences and private tags too), as written and stripped, plus each component of a
person name. We skip values shorter than 3 characters (single letters such as a sex `M`, `R`,
`-2`: too common to mean anything in bytes) and values that also occur inside a value the recipe
legitimately keeps (e.g. a private creator `SIEMENS` vs the kept Manufacturer). Values shorter
than 8 characters are searched in every byte outside the Pixel Data element (compressed pixels can
contain short strings by chance); longer values are searched in the whole file. The same search is
run on the original file first and must find every value, so the check can really fail.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from compliance.deid_recipe import load_recipe, recipe_from_dict
from dicom_io.deid import (
    FLAG_BURNED_IN_MISSING,
    FLAG_BURNED_IN_UNKNOWN,
    FLAG_BURNED_IN_YES,
    KEY_ENV,
    action_for,
    deidentify,
    load_key,
    remap_uid,
)
from dicom_io.errors import DeidentificationError

KEY = b"test-key-0123456789abcdef-not-secret"
MIN_LEN = 3
SHORT_LEN = 8
_PIXEL_TAG_EXPLICIT = b"\xe0\x7f\x10\x00"
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}


@pytest.fixture(scope="module")
def recipe():
    return load_recipe()


@pytest.fixture
def rsna(shared_data) -> Path:
    path = shared_data / "dicom" / "rsna_chest_pa_jpeg_baseline.dcm"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return path


# ---------------------------------------------------------------- helpers


def _strings(elem) -> list[str]:
    """String values of an element whose VR is written as text (numbers in binary VRs are not)."""
    value = elem.value
    if value is None or elem.VR not in _TEXT_VRS:
        return []
    values = list(value) if isinstance(value, MultiValue) else [value]
    out = []
    for v in values:
        text = str(v)
        out.append(text)
        if elem.VR == "PN":
            out.extend(part for group in text.split("=") for part in group.split("^"))
    return out


def _collect(ds: Dataset, recipe, removed: set[str], kept: set[str], inside_removed: bool = False) -> None:
    """Split the original's string values into those the recipe must make vanish and those it keeps."""
    for elem in ds:
        gone = inside_removed or action_for(elem, recipe) != "K"
        if elem.VR == "SQ":
            for item in elem.value:
                _collect(item, recipe, removed, kept, inside_removed=gone)
            continue
        (removed if gone else kept).update(_strings(elem))


def phi_values(ds: Dataset, recipe) -> set[str]:
    removed: set[str] = set()
    kept = set(recipe.profile_code.values())  # the de-identifier writes these itself (e.g. "DCM")
    _collect(ds, recipe, removed, kept)
    candidates = {v for raw in removed for v in (raw, raw.strip(), raw.strip(" \x00^"))}
    return {v for v in candidates if len(v.strip()) >= MIN_LEN and not any(v in k for k in kept)}


def _regions(data: bytes) -> tuple[bytes, bytes]:
    """(bytes outside the Pixel Data element, whole file)."""
    start = data.rfind(_PIXEL_TAG_EXPLICIT + b"OB")
    if start < 0:
        start = data.rfind(_PIXEL_TAG_EXPLICIT + b"OW")
    if start < 0:
        return data, data
    end = data.find(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", start)  # sequence delimiter of encapsulated data
    end = len(data) if end < 0 else end + 8
    return data[:start] + data[end:], data


def leaked(values: set[str], data: bytes) -> list[str]:
    outside, whole = _regions(data)
    found = []
    for value in sorted(values):
        haystack = outside if len(value) < SHORT_LEN else whole
        needles = {value.encode("utf-8"), value.encode("latin-1", "ignore")}
        if any(n and n in haystack for n in needles):
            found.append(value)
    return found


def _write(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _walk(ds: Dataset):
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item)


def _synthetic(sop: str = "1.2.3.4.5.6.7.1", study: str = "1.2.3.4.5.6.1", with_pixels: bool = True) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = study + ".2"
    ds.PatientName = "DOE^JANE"
    ds.PatientID = "MRN-55501"
    ds.Modality = "CR"
    if with_pixels:
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 4, 4, 1, 8, 8, 7
        ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
        ds.PixelData = bytes(range(16))
    return ds


# ---------------------------------------------------------------- PHI never reaches the bytes


def test_ctbrain_phi_absent_from_output_bytes(ctbrain, recipe):
    original_bytes = ctbrain.read_bytes()
    ds = pydicom.dcmread(ctbrain)
    values = phi_values(ds, recipe)
    for must in ("SIMPSON^HOMER^J^", "SIMPSON", "HOMER", "HIBBARD", "RIVERIA", "00007041776", "M1212121",
                 "SGH SPRINGFIELD GENERAL HOSPITAL", "Evergreen Terrace Springfield", "999887722", "20230101",
                 "SGHCT01A", "11223", "E^EMER^10^^SGH^ER", "CT BRAIN WO IVCON", "SyngoWorkflow",
                 "1.2.840.113696.376376.500.43158802.99999999999999", "http://example.com?q=1"):
        assert must in values, f"collector missed {must!r}"
    assert len(values) >= 60
    # the search must find every value in the original, or it proves nothing
    assert set(leaked(values, original_bytes)) == values

    out = _write(deidentify(ds, recipe, KEY).dataset)
    assert leaked(values, out) == []


def test_leak_check_catches_a_weakened_recipe(ctbrain, recipe):
    import yaml

    from compliance.deid_recipe import DEFAULT_RECIPE

    data = yaml.safe_load(DEFAULT_RECIPE.read_text(encoding="utf-8"))
    data["attributes"]["00100010"] = ["K", "PatientName"]
    data["defaults"]["private_tags"] = "K"
    weak = recipe_from_dict(data)
    ds = pydicom.dcmread(ctbrain)
    found = leaked(phi_values(ds, recipe), _write(deidentify(ds, weak, KEY).dataset))
    assert {"SIMPSON^HOMER^J^", "SIMPSON", "SIEMENS CSA HEADER", "Hmph."} <= set(found)


def test_rsna_phi_absent_from_output_bytes(rsna, recipe):
    ds = pydicom.dcmread(rsna)
    values = phi_values(ds, recipe)
    assert {"16d7f894-55d7-4d95-8957-d18987f0e981", "19010101", "view: PA",
            "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"} <= values
    assert set(leaked(values, rsna.read_bytes())) == values
    out = _write(deidentify(ds, recipe, KEY).dataset)
    assert leaked(values, out) == []


def test_output_has_no_private_tags_curves_or_overlays(ctbrain, recipe):
    ds = pydicom.dcmread(ctbrain)
    ds.add_new(0x60000010, "US", 4)  # overlay rows
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)  # overlay data
    ds.add_new(0x60004000, "LT", "overlay comment SMITH")
    ds.add_new(0x50000005, "US", 2)  # curve dimensions
    assert any(e.tag.is_private for e in _walk(ds))
    new = pydicom.dcmread(io.BytesIO(_write(deidentify(ds, recipe, KEY).dataset)))
    tags = [e.tag for e in _walk(new)]
    assert not [t for t in tags if t.is_private]
    assert not [t for t in tags if t.group >> 8 in (0x50, 0x60)]


def test_unlisted_attributes_are_removed_deny_by_default(recipe):
    # v2 (deny by default) changed this test: v1 kept unlisted CS values, remapped unlisted UIDs,
    # kept well-known UIDs and unlisted sequences (cleaned inside); v2 removes all of them.
    ds = _synthetic()
    ds.SecondaryCaptureDeviceManufacturer = "ACME for JANE DOE"  # LO, not in the recipe -> removed
    ds.add_new(0x00181016, "LO", "ACME for JANE DOE")
    ds.ViewPosition = "PA"  # listed K and an allowed value -> kept
    ds.BodyPartExamined = "CHEST JANE DOE"  # listed K, but not an allowed value -> removed
    ds.ConversionType = "WSD"  # CS, unlisted -> removed
    ds.add_new(0x00181009, "UT", "free text about DOE")  # not listed: removed
    ds.CodingSchemeUID = "1.2.840.10008.2.16.4"  # unlisted UID, even a standard one: removed
    ds.TargetUID = "1.2.3.999.77"  # unlisted UID: removed
    ds.add_new(0x00189999, "OB", b"DOE-binary")  # unknown public tag: removed
    item = Dataset()
    item.ContentCreatorName = "DOE^JOHN"
    ds.add_new(0x00089123, "SQ", Sequence([item]))  # an unlisted sequence: removed whole
    new = deidentify(ds, recipe, KEY).dataset
    for tag in (0x00181016, 0x00181009, 0x00189999, 0x00089123):
        assert tag not in new
    for keyword in ("SecondaryCaptureDeviceManufacturer", "BodyPartExamined", "ConversionType", "CodingSchemeUID",
                    "TargetUID"):
        assert keyword not in new, keyword
    assert new.ViewPosition == "PA" and new.Modality == "CR"
    assert b"DOE" not in _write(new)


def test_listed_sequences_are_cleaned_inside(recipe):
    ds = _synthetic()
    ref = Dataset()
    ref.ReferencedSOPClassUID = SecondaryCaptureImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7.9"
    ref.ContentCreatorName = "DOE^JOHN"  # listed Z: emptied
    ref.PersonName = "DOE^JOHN"  # listed D: dummy
    ref.PatientComments = "comment DOE"  # listed X
    ref.add_new(0x00189998, "LO", "DOE")  # unknown: removed
    ds.ReferencedImageSequence = Sequence([ref])
    inner = deidentify(ds, recipe, KEY).dataset.ReferencedImageSequence[0]
    assert inner.ContentCreatorName == ""
    assert inner.PersonName == recipe.dummy_values["PN"]
    assert "PatientComments" not in inner and 0x00189998 not in inner
    assert inner.ReferencedSOPInstanceUID == remap_uid("1.2.3.4.5.6.7.9", KEY)


def test_preamble_is_blanked(ctbrain, recipe):
    ds = pydicom.dcmread(ctbrain)
    ds.preamble = b"II*\x00SMITH^JOHN" + b"\x00" * 114  # a dual TIFF/DICOM preamble with a name
    data = _write(deidentify(ds, recipe, KEY).dataset)
    assert data[:132] == b"\x00" * 128 + b"DICM"


# ---------------------------------------------------------------- UIDs


def test_uids_are_valid_deterministic_and_keyed(ctbrain, recipe):
    ds = pydicom.dcmread(ctbrain)
    a = deidentify(ds, recipe, KEY).dataset
    b = deidentify(pydicom.dcmread(ctbrain), recipe, KEY).dataset
    c = deidentify(ds, recipe, b"another-key-0123456789abcdef").dataset
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
               "IrradiationEventUID"):
        new = a[kw].value
        assert new == b[kw].value, kw
        assert new != c[kw].value, kw
        assert new != ds[kw].value
        assert new.startswith("2.25.") and len(new) <= 64 and UID(new).is_valid
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    assert a.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert a.SOPClassUID == ds.SOPClassUID  # a class, not an instance: kept


def test_references_are_rewritten_consistently(ctbrain, recipe):
    ds = pydicom.dcmread(ctbrain)
    # in this file the source image reference and the irradiation event share one UID
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == ds.IrradiationEventUID
    new = deidentify(ds, recipe, KEY).dataset
    assert new.SourceImageSequence[0].ReferencedSOPInstanceUID == new.IrradiationEventUID
    assert new.ReferencedImageSequence[0].ReferencedSOPInstanceUID == remap_uid(
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID, KEY)

    # across files: a second instance of the same study references the first one
    first = _synthetic(sop="1.2.3.4.5.6.7.1")
    second = _synthetic(sop="1.2.3.4.5.6.7.2")
    ref = Dataset()
    ref.ReferencedSOPClassUID = SecondaryCaptureImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7.1"
    second.ReferencedImageSequence = Sequence([ref])
    new1, new2 = (deidentify(d, recipe, KEY).dataset for d in (first, second))
    assert new1.StudyInstanceUID == new2.StudyInstanceUID
    assert new2.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new1.SOPInstanceUID
    assert new1.SOPInstanceUID != new2.SOPInstanceUID


def test_multi_valued_uid_is_remapped_per_value(recipe):
    ds = _synthetic()
    ds.FailedSOPInstanceUIDList = ["1.2.3.1", "1.2.3.2"]
    new = deidentify(ds, recipe, KEY).dataset
    assert list(new.FailedSOPInstanceUIDList) == [remap_uid("1.2.3.1", KEY), remap_uid("1.2.3.2", KEY)]


# ---------------------------------------------------------------- pixels and input untouched


@pytest.mark.parametrize("which", ["ctbrain", "rsna"])
def test_pixels_are_untouched(which, request, recipe):
    # pixel data is rebuilt (v2); these JPEGs hold no COM/APPn segment, so the rebuild is exact
    path = request.getfixturevalue(which)
    ds = pydicom.dcmread(path)
    new = pydicom.dcmread(io.BytesIO(_write(deidentify(ds, recipe, KEY).dataset)))
    assert new.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert new.PixelData == ds.PixelData  # still compressed, byte for byte
    np.testing.assert_array_equal(new.pixel_array, ds.pixel_array)


def test_input_dataset_is_not_mutated(ctbrain, recipe):
    ds = pydicom.dcmread(ctbrain)
    before = ds.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=lambda e: "bulk")
    meta_before = str(ds.file_meta.MediaStorageSOPInstanceUID)
    deidentify(ds, recipe, KEY)
    assert ds.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=lambda e: "bulk") == before
    assert str(ds.file_meta.MediaStorageSOPInstanceUID) == meta_before


# ---------------------------------------------------------------- what the output says about itself


def test_deidentification_attributes_are_written(ctbrain, recipe):
    from pydicom.sr.codedict import codes

    result = deidentify(pydicom.dcmread(ctbrain), recipe, KEY)
    new = result.dataset
    assert result.recipe_version == recipe.version == "2.0.0"
    assert new.PatientIdentityRemoved == "YES"
    assert new.DeidentificationMethod == f"medvlm-ps3.15-basic {recipe.version}"
    (code,) = new.DeidentificationMethodCodeSequence
    expected = codes.DCM.BasicApplicationConfidentialityProfile
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        expected.value, expected.scheme_designator, expected.meaning)
    assert new.LongitudinalTemporalInformationModified == "REMOVED"  # study date emptied etc.
    assert new.StudyDate == "" and new.ContentDate == "19000101" and "SeriesDate" not in new


def test_recipe_version_is_recorded(recipe, tmp_path):
    import yaml

    from compliance.deid_recipe import DEFAULT_RECIPE

    data = yaml.safe_load(DEFAULT_RECIPE.read_text(encoding="utf-8"))
    data["version"] = "9.8.7"
    custom = recipe_from_dict(data)
    result = deidentify(_synthetic(), custom, KEY)
    assert result.recipe_version == "9.8.7"
    assert result.dataset.DeidentificationMethod.endswith(" 9.8.7")


def test_no_dates_touched_means_unmodified(recipe):
    new = deidentify(_synthetic(), recipe, KEY).dataset
    assert new.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_dummy_for_a_vr_without_dummy_raises(recipe):
    import yaml

    from compliance.deid_recipe import DEFAULT_RECIPE

    data = yaml.safe_load(DEFAULT_RECIPE.read_text(encoding="utf-8"))
    data["attributes"]["00280010"] = ["D", "Rows"]  # US has no dummy value
    with pytest.raises(DeidentificationError, match=r"\(0028,0010\).*VR US"):
        deidentify(_synthetic(), recipe_from_dict(data), KEY)


# ---------------------------------------------------------------- burned-in annotation


@pytest.mark.parametrize(
    ("value", "flag"),
    [(None, FLAG_BURNED_IN_MISSING), ("YES", FLAG_BURNED_IN_YES), ("NO", None), ("", FLAG_BURNED_IN_MISSING),
     ("MAYBE", FLAG_BURNED_IN_UNKNOWN)],
)
def test_burned_in_annotation_flag(recipe, value, flag):
    ds = _synthetic()
    if value is not None:
        ds.BurnedInAnnotation = value
    result = deidentify(ds, recipe, KEY)
    assert result.flags == ((flag,) if flag else ())
    assert result.needs_pixel_review is (flag is not None)


def test_no_pixels_no_pixel_flag(recipe):
    assert deidentify(_synthetic(with_pixels=False), recipe, KEY).flags == ()


def test_real_file_without_burned_in_annotation_is_flagged(ctbrain, recipe):
    assert deidentify(pydicom.dcmread(ctbrain), recipe, KEY).needs_pixel_review


# ---------------------------------------------------------------- the key


def test_missing_key_raises_typed_error_with_instructions():
    with pytest.raises(DeidentificationError, match=KEY_ENV) as info:
        load_key(None, environ={})
    assert "--key-file" in str(info.value)
    assert info.value.code == "deid_failed"


def test_key_from_file_and_env(tmp_path):
    key_file = tmp_path / "deid.key"
    key_file.write_text("a" * 64 + "\n", encoding="utf-8")
    assert load_key(key_file, environ={}) == b"a" * 64
    assert load_key(None, environ={KEY_ENV: "b" * 32}) == b"b" * 32
    with pytest.raises(DeidentificationError, match="cannot read"):
        load_key(tmp_path / "missing.key", environ={KEY_ENV: "b" * 32})
    key_file.write_text("short", encoding="utf-8")
    with pytest.raises(DeidentificationError, match="too short"):
        load_key(key_file)


def test_deidentify_refuses_a_short_key(recipe):
    with pytest.raises(DeidentificationError, match="key shorter"):
        deidentify(_synthetic(), recipe, b"short")
