"""What the labeler returns: the 14 observations, the three values, ``Label`` and ``Mention``."""

from __future__ import annotations

from dataclasses import dataclass

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""CheXpert's 14 observations, in CheXpert's order."""

POSITIVE, NEGATIVE, UNCERTAIN = "positive", "negative", "uncertain"
VALUES: tuple[str, ...] = (POSITIVE, NEGATIVE, UNCERTAIN)
LATERALITIES: tuple[str, ...] = ("left", "right", "bilateral")


@dataclass(frozen=True)
class Label:
    """The label of one observation in one report.

    Attributes:
        value: ``"positive"``, ``"negative"`` or ``"uncertain"``.
        laterality: ``"left"``, ``"right"``, ``"bilateral"`` or None where the report states no side.
    """

    value: str
    laterality: str | None = None

    def __post_init__(self) -> None:
        if self.value not in VALUES:
            raise ValueError(f"Label.value must be one of {VALUES}, got {self.value!r}")
        if self.laterality is not None and self.laterality not in LATERALITIES:
            raise ValueError(
                f"Label.laterality must be one of {LATERALITIES} or None, got {self.laterality!r}"
            )


@dataclass(frozen=True)
class Mention:
    """One mention of an observation in one sentence.

    Attributes:
        observation: one of ``OBSERVATIONS``.
        value: ``"positive"``, ``"negative"`` or ``"uncertain"`` for this mention alone.
        laterality: the side stated next to the mention, or None.
        sentence_index: index of the sentence in the text the mention came from.
        sentence: that sentence's text (as written, not lower-cased).
        start: character offset of the mention in the sentence.
        end: character offset just after the mention.
    """

    observation: str
    value: str
    laterality: str | None
    sentence_index: int
    sentence: str
    start: int
    end: int

    @property
    def phrase(self) -> str:
        """The mention's text as written."""
        return self.sentence[self.start : self.end]
