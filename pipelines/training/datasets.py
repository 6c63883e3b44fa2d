"""Training data: (study, report) pairs and report-derived question/answer pairs.

A data folder holds DICOM files and a ``reports.jsonl`` (the phantom layout of
``pipelines.phantoms``): one JSON object per study with ``study_uid``, ``findings``,
``impression``, ``indication``, ``split`` and ``views`` (``path`` relative to the folder, ``view``).
Images are read through ``dicom_io.load_image`` at the model's image size, frontal views first, then
lateral ones, and cached in memory and (optionally) as ``.npy`` files keyed by the file's sha256 and
the size, so that epochs never decode a DICOM twice.

Question/answer pairs come from the report through the labeler: "Is there a pleural effusion?" ->
"Yes. <the report's sentence>" or "No." (a handful of templates per observation).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compliance.clock import sha256_file
from pipelines.errors import PipelineError

REPORTS_FILE = "reports.jsonl"
FRONTAL_VIEWS = ("PA", "AP", "FRONTAL")

QUESTION_TEMPLATES: tuple[str, ...] = (
    "Is there {thing}?",
    "Do you see {thing}?",
    "Is {thing} present?",
    "Any evidence of {thing}?",
)
"""Question wordings; `{thing}` is the observation's phrase from `QUESTION_SUBJECTS`."""

QUESTION_SUBJECTS: dict[str, str] = {
    "Cardiomegaly": "cardiomegaly",
    "Pleural Effusion": "a pleural effusion",
    "Pneumothorax": "a pneumothorax",
    "Consolidation": "consolidation",
    "Atelectasis": "atelectasis",
    "Edema": "pulmonary edema",
    "Lung Lesion": "a lung nodule or mass",
    "Support Devices": "a support device",
}
"""Observations asked about, with the phrase used in questions (CheXpert names as in the labeler)."""


class DatasetError(PipelineError, ValueError):
    """A data folder cannot be used (no reports.jsonl, a malformed line, an unknown split)."""


@dataclass(frozen=True)
class PairRecord:
    """One (study, reference report) pair of a data folder (no patient identifiers: UIDs, texts and paths only).

    Not the store's `pipelines.store.models.StudyRecord` (a database row of a received study).
    """

    study_uid: str
    """Study Instance UID."""
    findings: str
    """FINDINGS section of the reference report."""
    impression: str
    """IMPRESSION section of the reference report."""
    indication: str
    """Clinical indication ("" when absent)."""
    split: str
    """train / val / test."""
    view_paths: tuple[Path, ...]
    """Absolute image paths, frontal views first, then the others (lateral)."""

    @property
    def report(self) -> str:
        """The reference report as the model writes it ("FINDINGS: ... IMPRESSION: ...")."""
        from medvlm.prompts import format_report

        return format_report(self.findings, self.impression)


def _view_rank(view: dict[str, Any]) -> int:
    name = str(view.get("view", "")).upper()
    return 0 if name in FRONTAL_VIEWS else 1


def load_records(data_dir: str | Path, splits: Sequence[str] | str | None = None) -> list[PairRecord]:
    """Read `reports.jsonl` of a data folder.

    Args:
        data_dir: the folder (DICOM files + reports.jsonl).
        splits: keep only these splits ("train", "val", "test"; a comma-separated string works
            too); None keeps all.

    Returns:
        Records in file order.

    Raises:
        DatasetError: no reports.jsonl, a malformed line (named by line number), or no study left.
    """
    data_dir = Path(data_dir)
    path = data_dir / REPORTS_FILE
    if not path.is_file():
        raise DatasetError(f"{path} not found: a data folder needs {REPORTS_FILE} (see `medvlm phantoms`)")
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    wanted = set(splits) if splits else None
    records: list[PairRecord] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                views = sorted(obj["views"], key=_view_rank)  # stable: frontal first, then the rest
                record = PairRecord(
                    study_uid=str(obj["study_uid"]),
                    findings=str(obj.get("findings") or ""),
                    impression=str(obj.get("impression") or ""),
                    indication=str(obj.get("indication") or ""),
                    split=str(obj.get("split") or "train"),
                    view_paths=tuple((data_dir / v["path"]).resolve() for v in views),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path}:{number}: malformed record ({type(exc).__name__})") from exc
            if not record.view_paths:
                raise DatasetError(f"{path}:{number}: study has no views")
            if wanted is None or record.split in wanted:
                records.append(record)
    if not records:
        raise DatasetError(f"{path}: no study in split(s) {sorted(wanted) if wanted else 'any'}")
    return records


class ImageCache:
    """Decoded, resized images: in memory, and as `.npy` under `cache_dir` when given.

    The key is the sha256 of the file's bytes plus the size and window, so a changed file is
    decoded again and two sizes never mix.

    Args:
        size: square edge the images are resized to (the model's `image_size`).
        cache_dir: folder for `.npy` files; None keeps the cache in memory only.
        window: intensity rule passed to `dicom_io.load_image`.
    """

    def __init__(self, size: int, cache_dir: str | Path | None = None, window: str = "auto") -> None:
        self.size = int(size)
        self.window = window
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[Path, np.ndarray] = {}
        self.decoded = 0
        """How many files were decoded (not found in either cache): for tests and logs."""

    def _key(self, path: Path) -> str:
        return f"{sha256_file(path)}_{self.size}_{self.window}"

    def get(self, path: str | Path) -> np.ndarray:
        """The image at `path` as float32 [0, 1], shape (size, size).

        Raises:
            dicom_io.DicomIOError: the file cannot be read (the message names the path).
        """
        path = Path(path)
        hit = self._memory.get(path)
        if hit is not None:
            return hit
        npy = None
        if self.cache_dir is not None:
            npy = self.cache_dir / f"{self._key(path)}.npy"
            if npy.is_file():
                image = np.load(npy, allow_pickle=False)
                self._memory[path] = image
                return image
        from dicom_io import load_image

        image, _meta = load_image(path, window=self.window, size=self.size)
        image = np.ascontiguousarray(image, dtype=np.float32)
        self.decoded += 1
        if npy is not None:
            npy.parent.mkdir(parents=True, exist_ok=True)
            tmp = npy.with_suffix(".tmp.npy")
            np.save(tmp, image, allow_pickle=False)
            tmp.replace(npy)  # atomic: two DDP ranks may write the same key
        self._memory[path] = image
        return image


class StudyDataset:
    """(study images, report) pairs of a data folder.

    Args:
        records: from `load_records`.
        cache: image cache at the model's size.
        max_views: views kept per study (frontal first); 1 = frontal only.
    """

    def __init__(self, records: Sequence[PairRecord], cache: ImageCache, max_views: int = 2) -> None:
        if max_views < 1:
            raise DatasetError(f"max_views must be >= 1, got {max_views}")
        self.records = list(records)
        self.cache = cache
        self.max_views = max_views

    def __len__(self) -> int:
        return len(self.records)

    def images(self, index: int) -> list[np.ndarray]:
        """The study's views, float32 [0, 1] (S, S) each, frontal first."""
        return [self.cache.get(p) for p in self.records[index].view_paths[: self.max_views]]

    def report(self, index: int) -> str:
        """The reference report text ("FINDINGS: ... IMPRESSION: ...")."""
        return self.records[index].report

    def warm(self) -> None:
        """Decode every image once (so the first epoch's timing is the training's)."""
        for i in range(len(self)):
            self.images(i)


# ---- question/answer pairs -----------------------------------------------------------------


@dataclass(frozen=True)
class QAPair:
    """A question about a study and its answer grounded in the report."""

    question: str
    """The question."""
    answer: str
    """"Yes. <sentence>", "Possibly. <sentence>" or "No."."""
    observation: str
    """The CheXpert observation asked about."""
    label: str
    """positive / negative / uncertain / absent (not mentioned by the report)."""


def derive_qa_pairs(
    findings: str,
    impression: str,
    rng: np.random.Generator,
    *,
    observations: Iterable[str] | None = None,
) -> list[QAPair]:
    """Question/answer pairs for one report, one per observation, grounded in the labeler.

    A positive observation is answered "Yes." plus the report sentence that mentions it; an
    uncertain one "Possibly." plus the sentence; a negated or unmentioned one "No.".

    Args:
        findings: the report's FINDINGS.
        impression: the report's IMPRESSION.
        rng: picks the question template of each pair.
        observations: observations to ask about; default all of `QUESTION_SUBJECTS`.

    Returns:
        One pair per observation, in `QUESTION_SUBJECTS` order.
    """
    from medvlm import labeler

    text = labeler.report_text({"findings": findings, "impression": impression})
    labels = labeler.label_report(text)
    mentions = labeler.find_mentions(text)
    pairs = []
    for obs in observations or QUESTION_SUBJECTS:
        thing = QUESTION_SUBJECTS[obs]
        template = QUESTION_TEMPLATES[int(rng.integers(len(QUESTION_TEMPLATES)))]
        question = template.format(thing=thing)
        question = question[0].upper() + question[1:]
        label = labels.get(obs)
        value = label.value if label is not None else "absent"
        sentence = next((m.sentence.strip() for m in mentions if m.observation == obs and m.value == value), "")
        if value == "positive":
            answer = f"Yes. {sentence}".strip()
        elif value == "uncertain":
            answer = f"Possibly. {sentence}".strip()
        else:
            answer = "No."
        pairs.append(QAPair(question, answer, obs, value))
    return pairs
