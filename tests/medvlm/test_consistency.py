"""Tests for consistency flags on drafts (sentences written for these tests)."""

from __future__ import annotations

from medvlm.consistency import Flag, check_consistency


def codes(flags: list[Flag]) -> list[str]:
    return [f.code for f in flags]


def test_clean_draft_has_no_flags():
    flags = check_consistency(
        "The heart size is normal. There is a small left pleural effusion. No pneumothorax.",
        "Small left pleural effusion.",
        has_prior=False,
    )
    assert flags == []


def test_contradiction_across_sections():
    flags = check_consistency(
        "Small right pleural effusion. Heart size normal.", "No pleural effusion.", has_prior=True
    )
    assert codes(flags) == ["contradiction"]
    (flag,) = flags
    assert flag.observation == "Pleural Effusion"
    assert flag.sentence_indices == (0, 2)
    assert flag.sentences == ("Small right pleural effusion", "No pleural effusion")


def test_uncertain_mention_is_not_a_contradiction():
    flags = check_consistency("Possible early pneumonia.", "No pneumonia.", has_prior=True)
    assert "contradiction" not in codes(flags)


def test_prior_mention_without_prior_fires_and_not_with_prior():
    findings = "Cardiomegaly is unchanged compared to the prior study. Lungs are clear."
    flags = check_consistency(findings, "Stable cardiomegaly.", has_prior=False)
    assert codes(flags) == ["prior_without_prior"]
    assert flags[0].sentence_indices == (0, 2)
    assert check_consistency(findings, "Stable cardiomegaly.", has_prior=True) == []


def test_no_prior_words_no_flag():
    assert check_consistency("Moderate cardiomegaly.", "Cardiomegaly.", has_prior=False) == []


def test_laterality_conflict_fires():
    flags = check_consistency("Left pleural effusion.", "Right pleural effusion.", has_prior=True)
    assert codes(flags) == ["laterality_conflict"]
    assert flags[0].observation == "Pleural Effusion"
    assert flags[0].sentence_indices == (0, 1)


def test_laterality_same_side_or_bilateral_does_not_fire():
    assert check_consistency("Left pleural effusion.", "Small left effusion.", has_prior=True) == []
    assert (
        check_consistency("Left and right pleural effusions.", "Bilateral pleural effusions.", has_prior=True)
        == []
    )
    assert check_consistency("Left pleural effusion.", "Right lower lobe atelectasis.", has_prior=True) == []


def test_empty_sections():
    assert check_consistency("", "", has_prior=False) == []
