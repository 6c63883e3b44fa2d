"""`medvlm evaluate --data DIR` on a labelled image folder: the pneumonia finding's accuracy and ROC AUC.

A labelled folder (one subfolder per class, `NORMAL/` and `PNEUMONIA/`; no `reports.jsonl`) is first indexed as a
data folder (`pipelines.training.image_folder.write_index`: one report per image derived from its label, split by
child exactly as `train_kermany.yaml` splits it), so the usual evaluation drafts and scores its held-out children
(`val`) and the baselines draw their reports from the other children (`train`). Evaluating the folder a model
was trained on thus scores only children it never saw.

Besides the usual table, for the pneumonia finding (positive = any class but NORMAL):

- accuracy, sensitivity, specificity of the **drafts**: a draft says pneumonia when the report labeler reads
  Pneumonia positive or uncertain in it (what the radiologist would read);
- ROC AUC of the model's **probability** of the finding: the findings head's (`medvlm.heads`) when the
  checkpoint has one, else the token probabilities of the label-derived reports given the image
  (P(pneumonia) = the pneumonia reports' share of the likelihood); plus the accuracy at probability 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.training.image_folder import (
    LABEL_REPORTS,
    NORMAL,
    folder_labels,
    is_labelled_folder,
    write_index,
)

if TYPE_CHECKING:
    from medvlm.build import MedVLM
    from pipelines.training.datasets import StudyDataset

FINDING = "Pneumonia"
INDEX_DIR = "index"


def prepare(data: str | Path, out: str | Path) -> Path:
    """The data folder to evaluate: `data` itself, or for a labelled image folder its index under `out/index`."""
    if not is_labelled_folder(data):
        return Path(data)
    return write_index(data, Path(out) / INDEX_DIR)


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count half); NaN when one class is absent."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def binary_scores(labels: Sequence[int], predicted: Sequence[int]) -> dict[str, float]:
    """Accuracy, sensitivity (recall of positives) and specificity (recall of negatives)."""
    y, p = np.asarray(labels, dtype=bool), np.asarray(predicted, dtype=bool)
    nan = float("nan")
    return {
        "accuracy": float((y == p).mean()) if len(y) else nan,
        "sensitivity": float(p[y].mean()) if y.any() else nan,
        "specificity": float((~p[~y]).mean()) if (~y).any() else nan,
    }


def draft_says_finding(report: str, finding: str = FINDING) -> bool:
    """Whether the labeler reads `finding` as positive or uncertain in a draft."""
    from medvlm.labeler import NEGATIVE, label_report

    label = label_report(report).get(finding)
    return label is not None and label.value != NEGATIVE


def token_probabilities(bundle: MedVLM, studies: Sequence[Sequence[np.ndarray]], batch_size: int = 16) -> np.ndarray:
    """P(pneumonia | image) from the decoder: softmax over the label-derived reports' log-likelihoods.

    Returns:
        (N,) the pneumonia reports' (bacterial, viral, unspecified) share of the likelihood.
    """
    import torch

    from medvlm import chat
    from medvlm.prompts import format_report

    kinds = list(LABEL_REPORTS)
    candidates = [format_report(*LABEL_REPORTS[k]) for k in kinds]
    pneumonia = torch.tensor([k != "normal" for k in kinds])
    out = []
    with torch.inference_mode():
        for start in range(0, len(studies), batch_size):
            examples = []
            for images in studies[start : start + batch_size]:
                prompt = chat.encode_study(bundle, list(images))
                examples += [chat.encode_training_example(bundle, prompt, c) for c in candidates]
            batch = chat.collate(bundle, examples, padding_side="right")
            logits = bundle.model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()  # (B*C, L, V)
            labels = batch["labels"][:, 1:]  # (B*C, L-1): token t is predicted at t-1
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            picked = logp.gather(-1, labels.clamp_min(0)[..., None])[..., 0] * (labels != -100)
            loglik = picked.sum(-1).view(-1, len(kinds))  # (B, C)
            out.append(torch.softmax(loglik, dim=-1)[:, pneumonia].sum(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def finding_probabilities(bundle: MedVLM, studies: Sequence[Sequence[np.ndarray]]) -> tuple[np.ndarray, str]:
    """(N,) P(pneumonia) per study and where it came from: `findings_head` or `token_probability`."""
    from medvlm.heads import study_probabilities

    rows = study_probabilities(bundle, studies)
    if rows is not None and FINDING in rows[0]:
        return np.asarray([r[FINDING] for r in rows], dtype=np.float64), "findings_head"
    return token_probabilities(bundle, studies), "token_probability"


def finding_metrics(bundle: MedVLM, data_dir: str | Path, split: str, test: StudyDataset,
                    predictions: Sequence[str]) -> dict[str, Any] | None:
    """The pneumonia finding's scores on a folder whose records carry labels (else None).

    Args:
        bundle: the evaluated model.
        data_dir: the data folder (`reports.jsonl` with `label` fields, as `write_index` writes).
        split: the evaluated split(s), comma-separated (the records of `test`, in file order).
        test: the evaluated studies.
        predictions: the model's draft of each study.

    Returns:
        `{"finding", "n", "positives", "accuracy", "sensitivity", "specificity", "roc_auc",
        "probability_accuracy", "probability_source"}`, or None when the folder has no labels.
    """
    labels = folder_labels(data_dir, [s.strip() for s in split.split(",") if s.strip()])
    if labels is None:
        return None
    y = [int(label != NORMAL) for label in labels[: len(test)]]
    probs, source = finding_probabilities(bundle, [test.images(i) for i in range(len(test))])
    drafts = [int(draft_says_finding(p)) for p in predictions]
    return {
        "finding": FINDING, "n": len(y), "positives": int(sum(y)),
        **binary_scores(y, drafts),
        "roc_auc": roc_auc(y, probs),
        "probability_accuracy": binary_scores(y, (probs >= 0.5).astype(int))["accuracy"],
        "probability_source": source,
    }


def finding_lines(finding: dict[str, Any] | None) -> list[str]:
    """What `medvlm evaluate` prints about the finding (empty without one)."""
    if not finding:
        return []
    keys = ("accuracy", "sensitivity", "specificity", "roc_auc")
    values = ", ".join(f"{k} {finding[k]:.3f}" if finding[k] is not None else f"{k} -" for k in keys)
    return [f"{finding['finding']} ({finding['n']} images, {finding['positives']} positive): {values} "
            f"(AUC from {finding['probability_source']})"]
