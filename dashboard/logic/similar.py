"""Similar prior cases: signed reports of other studies, ranked by image similarity when a model is
configured (``similar_cases_by_image``), else by shared findings labels (``similar_cases``).

Only another study's short label and report text are returned, never patient identity.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashboard.logic.study import frontal_image, study_images
from pipelines.store.study_detail import signed_reports
from pipelines.store.versions import ReviewError

if TYPE_CHECKING:
    from medvlm.build import MedVLM
    from pipelines.store import Store


@dataclass(frozen=True)
class SimilarCase:
    """A signed report of another study, similar to the one being read.

    Attributes:
        label: the other study's short label (``short_id``); no patient identity.
        study_uid: the other study (for links; never shown).
        shared: positive findings labels in common (label ranking), empty for image ranking.
        impression: its signed IMPRESSION.
        score: Jaccard overlap of labels, or cosine similarity of frontal-image embeddings.
        findings: its signed FINDINGS ("" where not loaded).
    """

    label: str
    study_uid: str
    shared: tuple[str, ...]
    impression: str
    score: float
    findings: str = ""


def _positive_labels(text: str) -> set[str]:
    from medvlm.labeler import label_report, labels_as_strings

    labels = labels_as_strings(label_report(text))
    return {k for k, v in labels.items() if v == "positive"}


def similar_cases(store: Store, study_uid: str, text: str, *, k: int = 3, scan: int = 300) -> list[SimilarCase]:
    """Signed reports of other studies most similar to ``text`` by positive CheXpert labels.

    This is the model-free fallback; with a configured model, ``similar_cases_by_image`` ranks by
    image embeddings instead.

    Args:
        store: the review store.
        study_uid: the study being read (excluded).
        text: its draft text.
        k: how many to return.
        scan: how many recent signed versions to consider.

    Returns:
        Up to ``k`` cases, best (highest Jaccard overlap) first; none when nothing is shared.
    """
    target = _positive_labels(text)
    out: list[SimilarCase] = []
    for r in signed_reports(store, exclude=study_uid, scan=scan):
        labels = _positive_labels(f"{r.findings} {r.impression}")
        union = target | labels
        shared = target & labels
        score = len(shared) / len(union) if union else 1.0  # both normal: similar
        if score > 0:
            out.append(SimilarCase(r.label, r.study_uid, tuple(sorted(shared)) or ("No Finding",), r.impression,
                                   score, r.findings))
    return sorted(out, key=lambda c: -c.score)[:k]


@dataclass(frozen=True)
class CaseCandidate:
    """A study with a signed report and a recorded frontal image: a candidate similar prior case.

    Attributes:
        study_uid: the study.
        label: its short label (``short_id``).
        findings: the newest signed version's FINDINGS.
        impression: the newest signed version's IMPRESSION.
        frontal: its frontal image file.
    """

    study_uid: str
    label: str
    findings: str
    impression: str
    frontal: Path


def signed_case_candidates(store: Store, *, scan: int = 500) -> list[CaseCandidate]:
    """Every study with a signed report (its newest signed version) and a recorded frontal image.

    The study being read is not excluded here (``similar_cases_by_image`` does that), so one list
    serves every study and the page can cache it.

    Args:
        store: the review store.
        scan: how many recent signed versions to consider (bounds the embedding work).

    Returns:
        Candidates, most recently signed first.
    """
    out: list[CaseCandidate] = []
    for r in signed_reports(store, scan=scan):
        frontal = frontal_image(study_images(r.source, r.metadata))
        if frontal is not None:
            out.append(CaseCandidate(r.study_uid, r.label, r.findings, r.impression, frontal))
    return out


def _file_key(path: Path) -> str | None:
    """Cache key of an image file: its path, modification time and size (None when it is gone)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{path}|{st.st_mtime_ns}|{st.st_size}"


def frontal_embeddings(bundle: MedVLM, paths: Sequence[Path], *, cache: MutableMapping[str, Any] | None = None,
                       batch_size: int = 16) -> list[Any]:
    """Pooled, unit image embeddings of frontal images through the model's own input path.

    Each file is read as the drafting job reads it (``dicom_io.reader.load_image`` at the model's
    image size), turned into ``pixel_values`` by the bundle's processor (``encode_studies``) and
    pooled by ``medvlm.retrieval.image_embeddings``.

    Args:
        bundle: the model (``load_model``).
        paths: image files.
        cache: file key → embedding, read and filled (the page keeps one per model).
        batch_size: images per tower call.

    Returns:
        One (D,) float32 array per path, or None for a file that cannot be read.
    """
    import numpy as np
    import torch

    from dicom_io.errors import DicomIOError
    from dicom_io.reader import load_image
    from medvlm.generate import StudyInput, encode_studies
    from medvlm.retrieval import image_embeddings

    cache = {} if cache is None else cache
    keys = [_file_key(Path(p)) for p in paths]
    todo: list[tuple[str, Any]] = []  # (key, (3, S, S) pixel values) of files not cached yet
    for key, path in zip(keys, paths, strict=True):
        if key is None or key in cache or any(k == key for k, _ in todo):
            continue
        try:
            pixels, _meta = load_image(path, size=bundle.config.image_size)
        except (DicomIOError, OSError, ValueError):
            continue  # a lost or unreadable file drops out of the ranking; it does not block the others
        (enc,) = encode_studies(bundle, [StudyInput([pixels])])
        todo.append((key, enc["pixel_values"][0]))
    device = next(bundle.llava.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            pv = torch.stack([p for _, p in chunk]).to(device)  # (B, 3, S, S)
            emb = image_embeddings(bundle, pv).cpu().numpy().astype(np.float32)  # (B, D)
            for (key, _), row in zip(chunk, emb, strict=True):
                cache[key] = row
    return [cache.get(k) if k is not None else None for k in keys]


def similar_cases_by_image(bundle: MedVLM, study_uid: str, frontal: Path, candidates: Sequence[CaseCandidate], *,
                           k: int = 3, cache: MutableMapping[str, Any] | None = None) -> list[SimilarCase]:
    """Signed reports of other studies whose frontal image looks most like this study's.

    Image-to-report retrieval (DESIGN.md): cosine similarity of the model's pooled frontal-image
    embeddings, searched exactly with ``medvlm.retrieval.ReportIndex``. Only the other study's
    short label and report text are returned, never patient identity.

    Args:
        bundle: the model (``load_model``).
        study_uid: the study being read (excluded from the results).
        frontal: its frontal image file.
        candidates: studies with signed reports (``signed_case_candidates``).
        k: how many to return.
        cache: file key → embedding (see ``frontal_embeddings``).

    Returns:
        Up to ``k`` cases, most similar first; candidates whose image cannot be read are left out.

    Raises:
        ReviewError: this study's frontal image cannot be read.
    """
    import numpy as np

    from medvlm.retrieval import ReportIndex

    others = [c for c in candidates if c.study_uid != study_uid]
    query, *embs = frontal_embeddings(bundle, [Path(frontal), *(c.frontal for c in others)], cache=cache)
    if query is None:
        raise ReviewError("this study's frontal image cannot be read, so similar cases cannot be searched by image")
    kept = [(c, e) for c, e in zip(others, embs, strict=True) if e is not None]
    if not kept or k < 1:
        return []
    index = ReportIndex(int(query.shape[0]))
    index.add(np.stack([e for _, e in kept]), [f"{c.findings} {c.impression}".strip() for c, _ in kept])
    (hits,) = index.search(query, k=k)
    return [SimilarCase(kept[h.index][0].label, kept[h.index][0].study_uid, (), kept[h.index][0].impression,
                        h.score, kept[h.index][0].findings) for h in hits]
