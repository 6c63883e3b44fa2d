"""Tests for the report labeler: sentences written for these tests (no real report text)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medvlm.labeler import OBSERVATIONS, Label, find_mentions, label_record, label_report, split_sentences

REPO_ROOT = Path(__file__).resolve().parents[2]


def values(text: str) -> dict[str, str]:
    return {obs: lab.value for obs, lab in label_report(text).items()}


def test_observations_are_chexpert_14_in_order():
    assert len(OBSERVATIONS) == 14
    assert OBSERVATIONS[0] == "No Finding" and OBSERVATIONS[-1] == "Support Devices"
    assert OBSERVATIONS.index("Cardiomegaly") < OBSERVATIONS.index("Lung Opacity")


def test_import_is_light():
    code = "import sys, medvlm.labeler; print(any(m in sys.modules for m in ('torch', 'dicom_io', 'mlflow')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("text", "obs", "value"),
    [
        ("There is a small right pleural effusion.", "Pleural Effusion", "positive"),
        ("No pleural effusion.", "Pleural Effusion", "negative"),
        ("The study is negative for pneumothorax.", "Pneumothorax", "negative"),
        ("Lungs are free of consolidation.", "Consolidation", "negative"),
        ("There is no evidence of pulmonary edema.", "Edema", "negative"),
        ("The prior left basilar opacity has resolved.", "Lung Opacity", "negative"),
        ("A pneumothorax is not seen.", "Pneumothorax", "negative"),
        ("Pneumonia has been ruled out.", "Pneumonia", "negative"),
        ("Chest without acute fracture.", "Fracture", "negative"),
        ("Pneumonia cannot be excluded.", "Pneumonia", "uncertain"),
        ("Findings may represent early pneumonia.", "Pneumonia", "uncertain"),
        ("Possible small left effusion.", "Pleural Effusion", "uncertain"),
        ("Streaky basilar opacity suggesting atelectasis.", "Atelectasis", "uncertain"),
        ("Borderline cardiomegaly.", "Cardiomegaly", "uncertain"),
        ("Questionable tiny pneumothorax at the apex.", "Pneumothorax", "uncertain"),
        ("Right basilar atelectasis versus consolidation.", "Consolidation", "uncertain"),
        ("Heart size is normal.", "Cardiomegaly", "negative"),
        ("The heart is normal in size.", "Cardiomegaly", "negative"),
        ("Heart size is not enlarged.", "Cardiomegaly", "negative"),
        ("The heart is enlarged.", "Cardiomegaly", "positive"),
        ("Enlarged cardiac silhouette.", "Cardiomegaly", "positive"),
        ("There is mild cardiomegaly.", "Cardiomegaly", "positive"),
        ("Blunting of the left costophrenic angle.", "Pleural Effusion", "positive"),
        ("Widened mediastinum.", "Enlarged Cardiomediastinum", "positive"),
        ("Healed right rib fractures.", "Fracture", "positive"),
        ("A 1.5 cm nodule in the right upper lobe.", "Lung Lesion", "positive"),
        ("Mild pulmonary vascular congestion.", "Edema", "positive"),
        ("Apical pleural thickening.", "Pleural Other", "positive"),
    ],
)
def test_single_sentence_values(text, obs, value):
    assert values(text).get(obs) == value


def test_lungs_clear_is_negative_for_opacity_and_normal():
    got = values("The lungs are clear.")
    assert got["Lung Opacity"] == "negative"
    assert got["No Finding"] == "positive"


def test_negated_list_covers_every_item():
    got = values("No pneumothorax or pleural effusion.")
    assert got == {"No Finding": "positive", "Pneumothorax": "negative", "Pleural Effusion": "negative"}
    got = values("There is no focal consolidation, pneumothorax, edema or effusion.")
    for obs in ("Consolidation", "Pneumothorax", "Edema", "Pleural Effusion"):
        assert got[obs] == "negative", obs


def test_negation_scope_ends_at_but():
    got = values("No pneumothorax, but there is a small left pleural effusion.")
    assert got["Pneumothorax"] == "negative"
    assert got["Pleural Effusion"] == "positive"
    assert "No Finding" not in got


def test_pseudo_negation_no_change_keeps_positive():
    assert values("No change in the moderate right pleural effusion.")["Pleural Effusion"] == "positive"


def test_multi_observation_sentence_and_laterality():
    labels = label_report("Cardiomegaly with a left pleural effusion and right lower lobe atelectasis.")
    assert labels["Cardiomegaly"] == Label("positive", None)
    assert labels["Pleural Effusion"] == Label("positive", "left")
    assert labels["Atelectasis"] == Label("positive", "right")


@pytest.mark.parametrize(
    ("text", "side"),
    [
        ("Bilateral pleural effusions.", "bilateral"),
        ("Bibasilar atelectasis.", "bilateral"),
        ("Small effusion on the right.", "right"),
        ("Left lower lobe consolidation.", "left"),
        ("Small pleural effusion.", None),
    ],
)
def test_laterality(text, side):
    (label,) = [lab for obs, lab in label_report(text).items() if obs != "No Finding"]
    assert label.laterality == side


def test_positive_beats_negative_across_sentences():
    got = values("No effusion on the left. Small right pleural effusion.")
    assert got["Pleural Effusion"] == "positive"


def test_support_devices_do_not_block_no_finding():
    got = values("Right PICC line with tip in the SVC. The heart size is normal. The lungs are clear.")
    assert got["Support Devices"] == "positive"
    assert got["No Finding"] == "positive"
    assert values("Dual-lead pacemaker in place.")["Support Devices"] == "positive"
    assert values("Median sternotomy wires are intact.")["Support Devices"] == "positive"
    assert values("The endotracheal tube has been removed.")["Support Devices"] == "negative"


def test_normal_report_gives_no_finding_only_when_normal():
    assert values("Normal chest radiograph.") == {"No Finding": "positive"}
    assert "No Finding" not in values("Heart size normal. Right upper lobe consolidation.")
    # an abnormality outside the 14 observations still keeps the report from reading as normal
    assert "No Finding" not in values("Lungs are clear. Calcified granuloma in the left apex.")
    assert "No Finding" not in values("Possible small left effusion.")


def test_unmentioned_observations_left_out_and_order():
    labels = label_report("Moderate cardiomegaly. Small left pleural effusion.")
    assert list(labels) == ["Cardiomegaly", "Pleural Effusion"]
    assert label_report("") == {}


def test_split_sentences_keeps_decimals_and_numbered_lists():
    text = "1. A 2.5 cm mass in the left lung. 2. No effusion."
    assert split_sentences(text) == ["A 2.5 cm mass in the left lung", "No effusion"]


def test_find_mentions_indexes_sentences():
    mentions = find_mentions("No effusion. Mild cardiomegaly.")
    assert [(m.observation, m.sentence_index, m.phrase) for m in mentions] == [
        ("Pleural Effusion", 0, "effusion"),
        ("Cardiomegaly", 1, "cardiomegaly"),
    ]


def test_label_record_uses_findings_and_impression():
    labels = label_record({"findings": "The heart is enlarged", "impression": "Possible pneumonia"})
    assert labels["Cardiomegaly"].value == "positive"
    assert labels["Pneumonia"].value == "uncertain"
    with pytest.raises(ValueError, match="findings"):
        label_record({"uid": 3})


def test_label_rejects_bad_values():
    with pytest.raises(ValueError, match="value"):
        Label("maybe")
    with pytest.raises(ValueError, match="laterality"):
        Label("positive", "up")


@pytest.mark.parametrize(
    "text",
    [
        "The heart size is at the upper limits of normal.",
        "Heart size upper limit of normal.",
        "Cardiac silhouette near top normal.",
        "Upper normal heart size, lungs clear.",
    ],
)
def test_upper_limits_of_normal_heart_is_negative(text):
    # a size stated inside the normal range is not cardiomegaly, and does not stop "No Finding"
    got = values(text)
    assert got["Cardiomegaly"] == "negative"
    assert got["No Finding"] == "positive"


def test_borderline_heart_stays_uncertain():
    assert values("The heart is borderline enlarged.")["Cardiomegaly"] == "uncertain"
    assert values("Borderline heart size.")["Cardiomegaly"] == "uncertain"


def test_devices_block_no_finding_option():
    text = "Left chest pacemaker with leads in good position. Heart size is normal. Lungs are clear."
    default = label_report(text)
    assert default["No Finding"] == Label("positive") and default["Support Devices"].value == "positive"
    mesh = label_report(text, devices_block_no_finding=True)
    assert "No Finding" not in mesh and mesh["Support Devices"].value == "positive"
    # without a device the option changes nothing; label_record passes it through
    assert label_report("Lungs are clear.", devices_block_no_finding=True)["No Finding"].value == "positive"
    record = {"findings": text, "impression": "No acute disease."}
    assert "No Finding" not in label_record(record, devices_block_no_finding=True)
    # a removed device does not block it
    gone = label_report("The chest tube has been removed. Lungs are clear.", devices_block_no_finding=True)
    assert gone["No Finding"].value == "positive"


@pytest.mark.parametrize(
    "text",
    [
        "Mild dextroscoliosis of the thoracic spine. Lungs are clear.",
        "Slight rightward curvature of the spine. Lungs are clear.",
        "Prominent epicardial fat pad. The lungs are clear.",
        "Bihilar prominence. The lungs are clear.",
        "The lung volumes are somewhat low. Lungs are otherwise clear.",
        "Low volumes with bronchovascular crowding. Lungs are clear.",
        "Mild prominence of the interstitial markings. No effusion.",
        "Degenerative endplate changes of the spine. Lungs are clear.",
        "Bilateral breast implants are seen. The lungs are clear.",
        "Stable right-sided volume loss. No effusion.",
    ],
)
def test_other_abnormalities_stop_no_finding(text):
    assert "No Finding" not in values(text)


def test_lung_volumes_normal_still_reads_normal():
    assert values("Lung volumes are normal. The lungs are clear.")["No Finding"] == "positive"


def test_volume_loss_is_not_atelectasis_and_collapse_is():
    assert "Atelectasis" not in values("Mild left-sided volume loss after lobectomy.")
    assert values("Collapse of the left lower lobe.")["Atelectasis"] == "positive"


def test_breast_implants_are_not_support_devices():
    assert "Support Devices" not in values("Bilateral breast prostheses.")
    assert values("Sternal wires and a right chest port.")["Support Devices"] == "positive"


def test_bone_metastases_are_not_a_lung_lesion():
    assert "Lung Lesion" not in values("Bone scan could evaluate for metastatic disease to the bone.")
    assert "Lung Lesion" not in values("Sclerotic osseous metastases in the spine.")
    assert values("Multiple pulmonary metastases.")["Lung Lesion"] == "positive"


@pytest.mark.parametrize(
    "text",
    [
        "Oblique views are suggested to exclude a nodule.",
        "A lateral view would help to rule-out a nodule.",
    ],
)
def test_exclude_purpose_is_negative(text):
    assert values(text)["Lung Lesion"] == "negative"


def test_cannot_exclude_stays_uncertain():
    assert values("A small nodule cannot be excluded.")["Lung Lesion"] == "uncertain"
    assert values("We cannot exclude a small nodule.")["Lung Lesion"] == "uncertain"


def test_graded_congestion_is_edema():
    assert values("Mild congestion without frank edema.")["Edema"] == "positive"


# Macro-F1 (six most frequent observations) reached on the held-out val split when this test was
# written; the test fails on a regression of more than the margin. PRIMARY is the scorer's
# primary metric (MeSH-convention setting, uncertain counted as positive, see its docstring);
# STRICT is the product default setting with uncertain counted as negative.
VAL_MACRO_F1_PRIMARY = 0.9198
VAL_MACRO_F1_STRICT = 0.8979
MARGIN = 0.02


def test_scorer_on_iu_reports(shared_data):
    path = shared_data / "iu_reports" / "reports.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    script = REPO_ROOT / "benchmarks" / "score_labeler.py"
    out = subprocess.run(
        [sys.executable, str(script), "--data", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = json.loads(out.stdout)
    val = result["val"]["labeler"]
    assert val["strict"]["macro_f1_top"] >= VAL_MACRO_F1_STRICT - MARGIN
    primary = result["primary_metric"]
    assert primary["setting"] == "labeler_mesh_convention" and primary["mode"] == "uncertain_positive"
    assert primary["val"] == result["val"]["labeler_mesh_convention"]["uncertain_positive"]["macro_f1_top"]
    assert primary["val"] >= VAL_MACRO_F1_PRIMARY - MARGIN
    assert result["val"]["ratio_to_baseline_macro_f1_strict"] > 1.0
    assert len(result["top_observations"]) == 6


def test_scorer_skips_cleanly_without_data(tmp_path):
    script = REPO_ROOT / "benchmarks" / "score_labeler.py"
    out = subprocess.run(
        [sys.executable, str(script), "--data", str(tmp_path / "absent.jsonl")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout)["skipped"] is True
