"""`medvlm ask`: answer a question about one study folder (frontal + lateral) with the model.

The study's files go through the same gate as the drafting job
(`pipelines.drafting.intake.prepare_study`), so an unusable study is refused with its reason code
instead of being answered.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.errors import PipelineError

if TYPE_CHECKING:
    import numpy as np

    from medvlm.generate import Answer


class AskError(PipelineError, ValueError):
    """The study folder cannot be used to answer (no study, several studies, no frontal image)."""


def load_study_images(study_dir: str | Path, image_size: int, *, window: str = "auto",
                      max_views: int | None = None) -> list[np.ndarray]:
    """The model inputs of the one study in a folder: frontal first, then lateral.

    Args:
        study_dir: folder holding one study's DICOM files (walked recursively).
        image_size: the model's input edge.
        window: intensity rule.

    Returns:
        (image_size, image_size) float32 arrays in [0, 1].

    Raises:
        AskError: no files, more than one study, or no usable frontal image (reason code given).
    """
    from dicom_io.sources import FolderSource
    from pipelines.drafting.intake import load_study_input, prepare_study

    studies = list(FolderSource(study_dir).studies())
    dicom = [s for s in studies if not s.study_key.startswith("file-")]
    if not dicom:
        raise AskError(f"{study_dir}: no DICOM study found (pass a folder with the study's files)")
    if len(dicom) > 1:
        raise AskError(f"{study_dir}: holds {len(dicom)} studies; pass a folder with exactly one")
    prepared = prepare_study(dicom[0].study_key, dicom[0].files, window=window)
    if prepared.quarantine_code is not None:
        raise AskError(f"{study_dir}: study unusable ({prepared.quarantine_code}): {prepared.quarantine_message}")
    return list(load_study_input(prepared.metadata, image_size, window=window, max_views=max_views).images)


def ask_study(model: str | Path, study_dir: str | Path, question: str,
              history: list[tuple[str, str]] | None = None, *, trust_remote_code: bool = False,
              dtype: str | None = None) -> Answer:
    """Answer `question` about the study in `study_dir`.

    Args:
        model: medvlm checkpoint, Hugging Face folder of an allowed family, or ``models:/NAME@ALIAS``.
        study_dir: the study's folder.
        question: the clinician's question.
        history: earlier (question, answer) turns.
        trust_remote_code: allow a Hugging Face folder's own code.
        dtype: "float32" | "bfloat16" weights (None: the checkpoint's own).

    Returns:
        `medvlm.generate.Answer` (text, confidence, sentences).

    Raises:
        AskError: empty question or unusable study.
        medvlm.errors.CheckpointError: the model folder is refused (family, weights, pickle, remote code).
    """
    from medvlm.generate import answer_question
    from pipelines.tracking.registry import load_model

    if not question.strip():
        raise AskError("the question is empty")
    bundle = load_model(model, merge=True, trust_remote_code=trust_remote_code, dtype=dtype)
    images = load_study_images(study_dir, bundle.config.image_size, max_views=bundle.config.max_views)
    return answer_question(bundle, images, question, history)


def format_answer(answer: Answer) -> str:
    """``<answer> (confidence 0.83)``; an empty answer is shown as ``(no answer)``."""
    return f"{answer.text or '(no answer)'} (confidence {answer.confidence:.2f})"


def ask_command(model: str, study_dir: str | Path, question: str, *, trust_remote_code: bool = False,
                dtype: str | None = None) -> str:
    """`medvlm ask --model M --study DIR "question"`: the answer with its confidence, one line.

    Raises:
        pipelines.drafting.ask.AskError: empty question or unusable study folder.
    """
    from pipelines.drafting.ask import ask_study, format_answer

    return format_answer(ask_study(model, study_dir, question, trust_remote_code=trust_remote_code, dtype=dtype))
