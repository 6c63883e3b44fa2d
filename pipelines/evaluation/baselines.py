"""Report baselines that any trained model must beat, scored with the same metrics.

* most-common report: every study gets the training set's most frequent report;
* nearest-neighbour retrieval: every study gets the training report whose embedding has the
  highest cosine similarity with the study's embedding (embeddings come from the caller, for
  example the contrastive image encoder).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from pipelines.evaluation.metrics import EvalResult, MetricsError, evaluate_reports, labels_for_reports

_SPACES = re.compile(r"\s+")


def _normalise(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def most_common_report(train_reports: Sequence[str]) -> str:
    """The most frequent training report (whitespace-normalised).

    Ties are broken deterministically: the lexicographically smallest of the tied texts wins,
    so the answer does not depend on the order of the training set.

    Raises:
        ValueError: no non-empty training report.
    """
    counts = Counter(t for t in (_normalise(r) for r in train_reports) if t)
    if not counts:
        raise ValueError("most_common_report needs at least one non-empty training report")
    best = max(counts.values())
    return min(text for text, n in counts.items() if n == best)


def most_common_predictions(train_reports: Sequence[str], n_queries: int) -> list[str]:
    """``n_queries`` copies of ``most_common_report(train_reports)``."""
    return [most_common_report(train_reports)] * n_queries


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ValueError(f"{name} row {int(zero[0])} has zero norm; cosine similarity is undefined")
    return x / norms


def nearest_neighbour_indices(train_embeddings: np.ndarray, query_embeddings: np.ndarray) -> np.ndarray:
    """Index of the cosine-nearest training row for each query row.

    Args:
        train_embeddings: (N, D) float array.
        query_embeddings: (Q, D) float array.

    Returns:
        (Q,) int array of indices into the training rows; ties go to the lowest index.

    Raises:
        ValueError: wrong ranks, different D, empty training set, zero or non-finite rows.
    """
    train = np.asarray(train_embeddings, dtype=np.float64)
    query = np.asarray(query_embeddings, dtype=np.float64)
    if train.ndim == 2 and train.shape[0] == 0:
        raise ValueError("train_embeddings is empty: nothing to retrieve from")
    train_u, query_u = _unit_rows(train, "train_embeddings"), _unit_rows(query, "query_embeddings")
    if train_u.shape[1] != query_u.shape[1]:
        raise ValueError(f"embedding sizes differ: train D={train_u.shape[1]} vs query D={query_u.shape[1]}")
    sims = query_u @ train_u.T  # (Q, N)
    return np.argmax(sims, axis=1)  # first maximum wins, so ties go to the lowest index


def nearest_neighbour_predictions(
    train_embeddings: np.ndarray, train_reports: Sequence[str], query_embeddings: np.ndarray
) -> list[str]:
    """The training report of the cosine-nearest training embedding, for each query.

    Args:
        train_embeddings: (N, D) embeddings of the training studies.
        train_reports: N training reports, aligned with ``train_embeddings``.
        query_embeddings: (Q, D) embeddings of the studies to report.

    Returns:
        Q reports.

    Raises:
        ValueError: ``train_reports`` and ``train_embeddings`` differ in length, or as
            ``nearest_neighbour_indices``.
    """
    if len(train_reports) != np.shape(train_embeddings)[0]:
        raise ValueError(
            f"train_reports and train_embeddings differ in length: {len(train_reports)} vs "
            f"{np.shape(train_embeddings)[0]}"
        )
    return [train_reports[i] for i in nearest_neighbour_indices(train_embeddings, query_embeddings)]


def evaluate_baselines(
    train_reports: Sequence[str],
    test_reports: Sequence[str],
    *,
    train_embeddings: np.ndarray | None = None,
    test_embeddings: np.ndarray | None = None,
    label_fn=labels_for_reports,
) -> dict[str, EvalResult]:
    """Score the baselines on a test set with ``evaluate_reports``.

    Args:
        train_reports: the training reports.
        test_reports: the reference reports of the test studies.
        train_embeddings: (N, D) embeddings of the training studies; with ``test_embeddings``
            enables the nearest-neighbour baseline.
        test_embeddings: (Q, D) embeddings of the test studies.
        label_fn: texts -> label dicts (default: ``medvlm.labeler`` through ``labels_for_reports``);
            each distinct text is labelled once.

    Returns:
        ``{"most_common": EvalResult, "nearest_neighbour": EvalResult}`` (the latter only when
        embeddings are given).
    """
    if (train_embeddings is None) != (test_embeddings is None):
        raise MetricsError("pass both train_embeddings and test_embeddings, or neither")
    cache: dict[str, Mapping[str, object]] = {}

    def labels(texts: Sequence[str]) -> list[Mapping[str, object]]:
        todo = sorted({t for t in texts if t not in cache})
        cache.update(zip(todo, label_fn(todo), strict=True))
        return [cache[t] for t in texts]

    ref_labels = labels(test_reports)
    runs = {"most_common": most_common_predictions(train_reports, len(test_reports))}
    if train_embeddings is not None:
        runs["nearest_neighbour"] = nearest_neighbour_predictions(
            train_embeddings, train_reports, test_embeddings
        )
    return {
        name: evaluate_reports(preds, test_reports, labels(preds), ref_labels) for name, preds in runs.items()
    }
