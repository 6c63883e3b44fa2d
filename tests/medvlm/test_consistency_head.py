"""Consistency flags between the draft's text and the findings head's probabilities."""

from __future__ import annotations

from medvlm.consistency import check_consistency


def _head(codes):
    return [f for f in codes if f.code == "head_disagreement"]


def test_missing_finding_the_head_is_sure_of_is_flagged():
    probs = {"Pneumothorax": 0.93, "Pneumothorax|left": 0.9, "Pneumothorax|right": 0.05, "Cardiomegaly": 0.1}
    flags = _head(check_consistency("The lungs are clear.", "No acute disease.", has_prior=False,
                                    probabilities=probs))
    assert [(f.observation, f.sentence_indices) for f in flags] == [("Pneumothorax", ())]
    assert "0.93" in flags[0].message and "clear" not in flags[0].message  # no report text in the message
    # the text reports it: no flag; a hedged mention is not a report of it
    assert not _head(check_consistency("Small left pneumothorax.", "Pneumothorax.", has_prior=False,
                                       probabilities=probs))
    assert _head(check_consistency("Possible left pneumothorax.", "", has_prior=False, probabilities=probs))


def test_asserted_finding_the_head_finds_unlikely_is_flagged_with_its_sentences():
    probs = {"Cardiomegaly": 0.04, "Pleural Effusion": 0.5}
    flags = _head(check_consistency("The lungs are clear. The heart is enlarged.", "Cardiomegaly.",
                                    has_prior=False, probabilities=probs))
    assert [(f.observation, f.sentence_indices) for f in flags] == [("Cardiomegaly", (1, 2))]
    # between the two thresholds the head is unsure: nothing to flag either way
    assert not _head(check_consistency("Small pleural effusion.", "", has_prior=False, probabilities=probs))
    assert not _head(check_consistency("", "", has_prior=False, probabilities={"Pleural Effusion": 0.5}))


def test_side_the_head_finds_unlikely_is_flagged():
    probs = {"Pleural Effusion": 0.95, "Pleural Effusion|left": 0.03, "Pleural Effusion|right": 0.97}
    flags = _head(check_consistency("Small left pleural effusion.", "Left effusion.", has_prior=False,
                                    probabilities=probs))
    assert len(flags) == 1 and "left" in flags[0].message and flags[0].sentence_indices == (0, 1)
    assert not _head(check_consistency("Small right pleural effusion.", "", has_prior=False, probabilities=probs))


def test_without_probabilities_nothing_changes():
    text = ("The heart is enlarged.", "Cardiomegaly.")
    assert check_consistency(*text, has_prior=False) == check_consistency(*text, has_prior=False, probabilities={})
    assert not _head(check_consistency(*text, has_prior=False))
