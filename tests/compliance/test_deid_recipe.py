"""The de-identification recipe is data: it loads, validates, and names the offending tag on errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from compliance.deid_recipe import ACTIONS, DEFAULT_RECIPE, RecipeError, load_recipe, parse_tag

# Table E.1-1 (Basic Profile) attributes named by the issue, with the action the recipe must give.
REQUIRED = {
    "PatientName": "Z", "PatientID": "Z", "PatientBirthDate": "Z", "PatientSex": "Z",
    "PatientAddress": "X", "OtherPatientIDs": "X", "OtherPatientNames": "X", "OtherPatientIDsSequence": "X",
    "InstitutionName": "X", "InstitutionAddress": "X", "ReferringPhysicianName": "Z",
    "PerformingPhysicianName": "X", "OperatorsName": "X", "NameOfPhysiciansReadingStudy": "X",
    "AccessionNumber": "Z", "StudyID": "Z", "StudyDate": "Z", "StudyTime": "Z", "SeriesDate": "X",
    "AcquisitionDate": "X", "AcquisitionTime": "X", "ContentDate": "D", "ContentTime": "D",
    "InstanceCreationDate": "X", "DeviceSerialNumber": "X", "StationName": "X",
    "StudyInstanceUID": "U", "SeriesInstanceUID": "U", "SOPInstanceUID": "U", "FrameOfReferenceUID": "U",
    "ReferencedSOPInstanceUID": "U", "IrradiationEventUID": "U", "InstanceCreatorUID": "U",
    "PatientAge": "X", "PatientWeight": "X", "PatientSize": "X", "AdditionalPatientHistory": "X",
    "PatientComments": "X", "RequestAttributesSequence": "X", "PhysiciansOfRecord": "X",
    "RequestingPhysician": "X", "StudyDescription": "X", "SeriesDescription": "X", "ImageComments": "X",
    "MilitaryRank": "X", "BranchOfService": "X", "EthnicGroup": "X", "PatientTelephoneNumbers": "X",
    "IssuerOfPatientID": "X", "PatientBirthTime": "X", "MedicalRecordLocator": "X",
    "CurrentPatientLocation": "X", "DigitalSignaturesSequence": "X", "OriginalAttributesSequence": "X",
    "IconImageSequence": "X", "SOPClassUID": "K",
}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _default_data() -> dict:
    return yaml.safe_load(DEFAULT_RECIPE.read_text(encoding="utf-8"))


def test_default_recipe_loads_with_version_and_hash():
    recipe = load_recipe()
    assert recipe.name == "medvlm-ps3.15-basic"
    assert recipe.version == "2.0.0" and DEFAULT_RECIPE.name == "ps3_15_basic_v2.yaml"
    assert recipe.method == "medvlm-ps3.15-basic 2.0.0"
    assert recipe.sha256 == hashlib.sha256(DEFAULT_RECIPE.read_bytes()).hexdigest()
    assert recipe.profile_code == {"value": "113100", "scheme": "DCM",
                                   "meaning": "Basic Application Confidentiality Profile"}
    assert set(recipe.actions.values()) <= ACTIONS
    assert len(recipe.actions) >= 200
    assert recipe.private_action == "X"
    assert recipe.removed_group_prefixes == {0x50, 0x60}
    assert {"PN", "LO", "SH", "LT", "ST", "UT", "DA", "DT", "TM"} <= recipe.removed_vrs
    # deny by default (v2): nothing unlisted survives
    assert (recipe.other_action, recipe.sequence_action, recipe.uid_action) == ("X", "X", "X")
    assert {"US", "SC", "OT", "XC", "ES"} <= recipe.burned_in_modalities


def test_v1_recipe_still_loads_for_past_exports():
    v1 = load_recipe(DEFAULT_RECIPE.parent / "ps3_15_basic_v1.yaml")
    assert v1.version == "1.0.0" and v1.other_action == "K" and not v1.allowed_values


def test_free_text_and_enumerated_values_are_not_kept_blindly():
    recipe = load_recipe()
    by_keyword = {kw: tag for tag, kw in recipe.keywords.items()}
    for keyword in ("CodeMeaning", "LUTExplanation", "WindowCenterWidthExplanation", "EncapsulatedDocument"):
        assert recipe.actions[by_keyword[keyword]] == "X", keyword
    kept_text = [t for t, a in recipe.actions.items() if a == "K" and recipe.keywords[t] in (
        "BodyPartExamined", "ViewPosition", "ImageType", "Modality", "PhotometricInterpretation", "RescaleType")]
    assert all(t in recipe.allowed_values for t in kept_text) and len(kept_text) == 6


def test_default_recipe_covers_basic_profile_attributes():
    recipe = load_recipe()
    by_keyword = {kw: recipe.actions[tag] for tag, kw in recipe.keywords.items()}
    wrong = {kw: (by_keyword.get(kw), want) for kw, want in REQUIRED.items() if by_keyword.get(kw) != want}
    assert not wrong, f"keyword: (recipe action, expected): {wrong}"


def test_every_recipe_keyword_matches_the_dicom_dictionary():
    from pydicom.datadict import keyword_for_tag

    recipe = load_recipe()
    mismatched = {f"{t:08X}": (kw, keyword_for_tag(t)) for t, kw in recipe.keywords.items() if keyword_for_tag(t) != kw}
    assert not mismatched


def test_every_dummy_vr_is_a_real_vr_and_fits_it():
    recipe = load_recipe()
    assert recipe.dummy_values["DA"] == "19000101"
    assert len(recipe.dummy_values["CS"]) <= 16 and recipe.dummy_values["CS"].isupper()


def test_bad_action_names_the_tag(tmp_path):
    data = _default_data()
    data["attributes"]["00100010"] = ["Q", "PatientName"]
    with pytest.raises(RecipeError, match=r"\(0010,0010\) PatientName: unknown action 'Q'") as info:
        load_recipe(_write(tmp_path, data))
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("version"), "missing required key 'version'"),
        (lambda d: d.update(version=1.0), "'version' must be a quoted string"),
        (lambda d: d.update(version="v1"), "'version' must be a quoted string"),
        (lambda d: d.update(colour="red"), "unknown top-level key"),
        (lambda d: d["attributes"].update({"0010001": ["X", "Oops"]}), "not of the form GGGGEEEE"),
        (lambda d: d["attributes"].update({"00100020": ["Z"]}), r"\(0010,0020\): entry must be"),
        (lambda d: d["defaults"].update(private_tags="K2"), "defaults.private_tags"),
        (lambda d: d["defaults"].update(removed_groups=["6000"]), "removed_groups"),
        (lambda d: d.update(dummy_values={"PN": 3}), "dummy_values"),
        (lambda d: d.update(name="two words"), "'name' must be"),
        (lambda d: d["allowed_values"].update({"00100010": ["X"]}), r"\(0010,0010\): only tags listed with action K"),
        (lambda d: d["allowed_values"].update({"00180015": ["re:("]}), "not a valid regular expression"),
        (lambda d: d["defaults"].update(burned_in_modalities="US"), "burned_in_modalities"),
    ],
)
def test_invalid_recipes_are_refused(tmp_path, mutate, message):
    data = _default_data()
    mutate(data)
    with pytest.raises(RecipeError, match=message):
        load_recipe(_write(tmp_path, data))


def test_duplicate_tag_is_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    text = DEFAULT_RECIPE.read_text(encoding="utf-8")
    path.write_text(text.replace('  "00100020": [Z, PatientID]\n',
                                 '  "00100020": [Z, PatientID]\n  "00100020": [K, PatientID]\n'), encoding="utf-8")
    with pytest.raises(RecipeError, match="duplicate key '00100020'"):
        load_recipe(path)


def test_same_tag_in_two_spellings_is_refused(tmp_path):
    data = _default_data()
    data["attributes"]["(0010,0020)"] = ["K", "PatientID"]
    with pytest.raises(RecipeError, match=r"\(0010,0020\) is listed twice"):
        load_recipe(_write(tmp_path, data))


def test_missing_or_unparsable_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


def test_parse_tag_forms():
    assert parse_tag("00100010") == parse_tag("0010,0010") == parse_tag("(0010,0010)") == 0x00100010


def test_readme_documents_format_and_versioning():
    readme = (DEFAULT_RECIPE.parent / "README.md").read_text(encoding="utf-8")
    for word in ("version", "X", "Z", "D", "K", "U", "private", "removed_vrs"):
        assert word in readme
