"""Metrics and baselines checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.evaluation.baselines import (
    evaluate_baselines,
    most_common_predictions,
    most_common_report,
    nearest_neighbour_indices,
    nearest_neighbour_predictions,
)
from pipelines.evaluation.metrics import (
    CHEXPERT_OBSERVATIONS,
    MetricsError,
    bleu_scores,
    clinical_scores,
    evaluate_reports,
    labels_for_reports,
    rouge_l,
    tokenize,
)

# Three reports whose labels give known counts (see test_clinical_scores_hand_counts).
REF_LABELS = [
    {"Cardiomegaly": "positive", "Edema": "positive"},
    {"Cardiomegaly": "negative", "Pleural Effusion": "positive"},
    {"No Finding": "positive"},
]
PRED_LABELS = [
    {"Cardiomegaly": "positive"},
    {"Cardiomegaly": "positive", "Pleural Effusion": "uncertain"},
    {"No Finding": "positive", "Edema": "positive"},
]


def test_tokenize_drops_punctuation_and_case():
    assert tokenize("Heart size is NORMAL. No effusion, 2 views.") == [
        "heart",
        "size",
        "is",
        "normal",
        "no",
        "effusion",
        "2",
        "views",
    ]


def test_perfect_match_scores_one():
    texts = ["The heart is enlarged. Small left pleural effusion.", "No acute cardiopulmonary process."]
    labels = [{"Cardiomegaly": "positive", "Pleural Effusion": "positive"}, {"No Finding": "positive"}]
    result = evaluate_reports(texts, texts, labels, labels)
    for key in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "clinical_micro_f1", "clinical_macro_f1"):
        assert result.summary[key] == pytest.approx(1.0), key
    assert result.summary["n_reports"] == 2.0
    assert result.summary["n_observations_scored"] == 3.0
    assert all(isinstance(v, float) for v in result.summary.values())


def test_bleu_and_rouge_partial_match_by_hand():
    # 3 of 4 unigrams match, 2 of 3 bigrams; equal lengths, so no brevity penalty.
    scores = bleu_scores(["the heart is normal"], ["the heart is enlarged"])
    assert scores["bleu_1"] == pytest.approx(0.75)
    assert scores["bleu_2"] == pytest.approx(math.sqrt(0.75 * 2 / 3))
    # LCS = 3 of 4 tokens on both sides.
    assert rouge_l(["the heart is normal"], ["the heart is enlarged"]) == pytest.approx(0.75)


def test_bleu_brevity_penalty_and_rouge_recall_by_hand():
    # Candidate 2 tokens, reference 4: BP = exp(1 - 4/2); unigram precision 1.
    assert bleu_scores(["the heart"], ["the heart is normal"])["bleu_1"] == pytest.approx(math.exp(-1))
    # LCS 2: precision 1, recall 0.5 -> F = 2/3.
    assert rouge_l(["the heart"], ["the heart is normal"]) == pytest.approx(2 / 3)


def test_clinical_scores_hand_counts():
    summary, rows = clinical_scores(PRED_LABELS, REF_LABELS)
    by_obs = {row["observation"]: row for row in rows}
    assert [row["observation"] for row in rows] == list(CHEXPERT_OBSERVATIONS)
    # Cardiomegaly: TP 1, FP 1 (report 1 is negative in the reference).
    assert (by_obs["Cardiomegaly"]["tp"], by_obs["Cardiomegaly"]["fp"], by_obs["Cardiomegaly"]["fn"]) == (
        1,
        1,
        0,
    )
    assert by_obs["Cardiomegaly"]["f1"] == pytest.approx(2 / 3)
    # Edema: missed once, invented once. Pleural effusion: uncertain is not positive -> missed.
    assert (by_obs["Edema"]["tp"], by_obs["Edema"]["fp"], by_obs["Edema"]["fn"]) == (0, 1, 1)
    assert (by_obs["Pleural Effusion"]["support"], by_obs["Pleural Effusion"]["fn"]) == (1, 1)
    assert by_obs["No Finding"]["f1"] == 1.0
    assert not by_obs["Fracture"]["scored"] and by_obs["Fracture"]["support"] == 0
    # Micro: TP 2, FP 2, FN 2. Macro over the 4 occurring observations.
    assert summary["clinical_micro_precision"] == pytest.approx(0.5)
    assert summary["clinical_micro_recall"] == pytest.approx(0.5)
    assert summary["clinical_micro_f1"] == pytest.approx(0.5)
    assert summary["clinical_macro_precision"] == pytest.approx((0.5 + 0 + 0 + 1) / 4)
    assert summary["clinical_macro_recall"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert summary["clinical_macro_f1"] == pytest.approx((2 / 3 + 0 + 0 + 1) / 4)
    assert summary["n_observations_scored"] == 4.0


def test_clinical_scores_uncertain_as_positive():
    summary, rows = clinical_scores(PRED_LABELS, REF_LABELS, uncertain_as="positive")
    # Pleural effusion now a hit: micro TP 3, FP 2, FN 1.
    assert summary["clinical_micro_precision"] == pytest.approx(3 / 5)
    assert summary["clinical_micro_recall"] == pytest.approx(3 / 4)
    assert summary["clinical_macro_f1"] == pytest.approx((2 / 3 + 0 + 1 + 1) / 4)


def test_clinical_scores_nothing_to_find_is_nan_not_one():
    summary, _ = clinical_scores([{"Edema": "negative"}], [{}])
    assert math.isnan(summary["clinical_macro_f1"]) and math.isnan(summary["clinical_micro_f1"])
    assert summary["n_observations_scored"] == 0.0


def test_label_objects_with_value_attribute_are_accepted():
    class FakeLabel:
        value = "positive"

    summary, _ = clinical_scores([{"Edema": FakeLabel()}], [{"Edema": "positive"}])
    assert summary["clinical_macro_f1"] == 1.0


@pytest.mark.parametrize(
    ("preds", "refs", "pred_labels", "ref_labels", "match"),
    [
        (["a"], ["a", "b"], [{}], [{}, {}], "differ in length"),
        ([], [], [], [], "empty"),
        (["a"], ["a"], [{"Heart Big": "positive"}], [{}], "unknown observation"),
        (["a"], ["a"], [{"Edema": "maybe"}], [{}], "must be one of"),
    ],
)
def test_bad_inputs_raise_metrics_error(preds, refs, pred_labels, ref_labels, match):
    with pytest.raises(MetricsError, match=match):
        evaluate_reports(preds, refs, pred_labels, ref_labels)


def test_per_finding_markdown_table():
    result = evaluate_reports(
        ["heart enlarged"], ["heart enlarged"], [{"Cardiomegaly": "positive"}], [{"Cardiomegaly": "positive"}]
    )
    table = result.to_markdown()
    assert "| Cardiomegaly | 1 | 1.000 | 1.000 | 1.000 |" in table
    assert "| Fracture | 0 | - | - | - |" in table
    assert len(table.strip().splitlines()) == 2 + 14


def test_labels_for_reports_uses_the_labeler():
    pytest.importorskip("medvlm.labeler", reason="medvlm.labeler not importable yet")
    labels = labels_for_reports(["The heart is enlarged.", "No pleural effusion."])
    assert labels[0].get("Cardiomegaly") == "positive"
    assert labels[1].get("Pleural Effusion") == "negative"
    result = evaluate_reports(["The heart is enlarged."], ["Cardiomegaly. The heart is enlarged."])
    assert result.summary["clinical_macro_f1"] == pytest.approx(1.0)


# --- baselines ---------------------------------------------------------------------------------


def test_most_common_report_and_deterministic_ties():
    train = ["No acute disease.", "Cardiomegaly.", "No  acute disease. ", "Cardiomegaly.", "Effusion."]
    # Two texts tie with 2 each (whitespace normalised); the lexicographically smaller wins.
    assert most_common_report(train) == "Cardiomegaly."
    assert most_common_report(list(reversed(train))) == "Cardiomegaly."
    assert most_common_report(train + ["No acute disease."]) == "No acute disease."
    assert most_common_predictions(train, 3) == ["Cardiomegaly."] * 3
    with pytest.raises(ValueError):
        most_common_report(["", "  "])


def test_nearest_neighbour_cosine_top1():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    reports = ["right", "up", "diagonal"]
    # Cosine ignores length: (5, 0.1) is closest to (1, 0); (-1, 10) closest to (0, 1); (2, 2.1) to (1, 1).
    queries = np.array([[5.0, 0.1], [-1.0, 10.0], [2.0, 2.1]])
    assert nearest_neighbour_indices(train, queries).tolist() == [0, 1, 2]
    assert nearest_neighbour_predictions(train, reports, queries) == ["right", "up", "diagonal"]
    # A tie goes to the lowest index.
    assert nearest_neighbour_indices(np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([[3.0, 0.0]])).tolist() == [
        0
    ]


@pytest.mark.parametrize(
    ("train", "query", "match"),
    [
        (np.ones((2, 3)), np.ones((1, 4)), "embedding sizes differ"),
        (np.ones(3), np.ones((1, 3)), "must be 2-D"),
        (np.array([[0.0, 0.0]]), np.ones((1, 2)), "zero norm"),
        (np.array([[np.nan, 1.0]]), np.ones((1, 2)), "NaN"),
    ],
)
def test_nearest_neighbour_rejects_bad_embeddings(train, query, match):
    with pytest.raises(ValueError, match=match):
        nearest_neighbour_indices(train, query)


def test_evaluate_baselines_with_fake_labeler():
    train = ["heart enlarged", "heart enlarged", "lungs clear"]
    test = ["lungs clear", "heart enlarged"]
    table = {"heart enlarged": {"Cardiomegaly": "positive"}, "lungs clear": {"No Finding": "positive"}}
    calls = []

    def label_fn(texts):
        calls.append(list(texts))
        return [table[t] for t in texts]

    train_emb = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    test_emb = np.array([[0.1, 1.0], [1.0, 0.0]])
    results = evaluate_baselines(
        train, test, train_embeddings=train_emb, test_embeddings=test_emb, label_fn=label_fn
    )
    # Most common says "heart enlarged" for both: right once. Nearest neighbour is right twice.
    assert results["most_common"].summary["bleu_1"] == pytest.approx(0.5)
    assert results["nearest_neighbour"].summary["clinical_macro_f1"] == pytest.approx(1.0)
    assert results["nearest_neighbour"].summary["bleu_1"] == pytest.approx(1.0)
    # Cardiomegaly: TP 1, FP 1 -> F1 2/3; No Finding: FN 1 -> 0.
    assert results["most_common"].summary["clinical_macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert sum(len(c) for c in calls) == 2  # each distinct text labelled once
    assert set(evaluate_baselines(train, test, label_fn=label_fn)) == {"most_common"}
