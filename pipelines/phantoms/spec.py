"""What a phantom study shows: the findings spec, its CheXpert labels, and drawing one at random.

A `FindingsSpec` is the single source of truth of a study: the renderers draw it into the pixels
(`frontal`, `lateral`), `reports` words it, and `labels()` gives the CheXpert targets. Sides are
always the patient's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medvlm.labeler import OBSERVATIONS
from pipelines.errors import PipelineError


class PhantomError(PipelineError, ValueError):
    """A phantom spec, config or image argument that cannot be used; the message names the field."""


KINDS = (
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "nodule",
    "consolidation",
    "atelectasis",
    "edema",
    "support_devices",
)
"""Finding kinds a spec can hold; `nodule` covers masses (size_mm >= 30)."""

DEVICES = ("endotracheal_tube", "central_line", "pacemaker")
LOBES = {
    "right": ("right upper lobe", "right middle lobe", "right lower lobe"),
    "left": ("left upper lobe", "lingula", "left lower lobe"),
}
ZONES = ("upper", "mid", "lower")

CHEXPERT_OBSERVATIONS: tuple[str, ...] = OBSERVATIONS
"""CheXpert's 14 observations: ``medvlm.labeler.OBSERVATIONS``, re-exported."""

_KIND_LABELS = {
    "cardiomegaly": ("Cardiomegaly",),
    "pleural_effusion": ("Pleural Effusion",),
    "pneumothorax": ("Pneumothorax",),
    "nodule": ("Lung Lesion",),
    "consolidation": ("Consolidation", "Lung Opacity"),
    "atelectasis": ("Atelectasis",),
    "edema": ("Edema",),
    "support_devices": ("Support Devices",),
}
_ALLOWED_SIZES = {
    "pleural_effusion": ("small", "moderate", "large"),
    "pneumothorax": ("small", "moderate", "large"),
    "cardiomegaly": ("mild", "moderate"),
    "edema": ("mild", "moderate"),
}
_ALLOWED_SIDES = {
    "pleural_effusion": ("right", "left", "bilateral"),
    "pneumothorax": ("right", "left"),
    "nodule": ("right", "left"),
    "consolidation": ("right", "left"),
    "atelectasis": ("right", "left", "bilateral"),
}


@dataclass(frozen=True)
class Finding:
    """One finding of a phantom study; sides are the patient's."""

    kind: str
    """One of `KINDS`."""
    side: str | None = None
    """"right" / "left" / "bilateral" (effusion, atelectasis); None for sideless kinds."""
    size: str | None = None
    """Effusion / pneumothorax: small|moderate|large; cardiomegaly / edema: mild|moderate."""
    zone: str | None = None
    """Nodule / atelectasis: upper|mid|lower; consolidation: a lobe name from `LOBES`."""
    size_mm: float | None = None
    """Nodule diameter in mm; 30 mm or more is reported as a mass."""
    devices: tuple[str, ...] = ()
    """Support devices, a subset of `DEVICES` (only for kind support_devices)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PhantomError(f"Finding.kind must be one of {KINDS}, got {self.kind!r}")
        sides = _ALLOWED_SIDES.get(self.kind)
        if sides is None and self.side is not None:
            raise PhantomError(f"Finding.side must be None for {self.kind}, got {self.side!r}")
        if sides is not None and self.side not in sides:
            raise PhantomError(f"Finding.side for {self.kind} must be one of {sides}, got {self.side!r}")
        sizes = _ALLOWED_SIZES.get(self.kind)
        if sizes is not None and self.size not in sizes:
            raise PhantomError(f"Finding.size for {self.kind} must be one of {sizes}, got {self.size!r}")
        if self.kind in ("nodule", "atelectasis") and self.zone not in ZONES:
            raise PhantomError(f"Finding.zone for {self.kind} must be one of {ZONES}, got {self.zone!r}")
        if self.kind == "consolidation" and self.zone not in LOBES.get(self.side or "", ()):
            raise PhantomError(
                f"Finding.zone for consolidation must be a {self.side} lobe, got {self.zone!r}"
            )
        if self.kind == "nodule" and not (self.size_mm and 3.0 <= self.size_mm <= 100.0):
            raise PhantomError(f"Finding.size_mm for a nodule must be in [3, 100], got {self.size_mm!r}")
        if self.kind == "support_devices" and (not self.devices or set(self.devices) - set(DEVICES)):
            raise PhantomError(
                f"Finding.devices must be a non-empty subset of {DEVICES}, got {self.devices!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        """Only the fields that apply to this kind (None / empty left out)."""
        out: dict[str, Any] = {"kind": self.kind}
        for name in ("side", "size", "zone", "size_mm"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.devices:
            out["devices"] = list(self.devices)
        return out


@dataclass(frozen=True)
class FindingsSpec:
    """What a phantom study shows; an empty tuple means no finding."""

    findings: tuple[Finding, ...] = ()
    """At most one finding per kind."""

    def __post_init__(self) -> None:
        kinds = [f.kind for f in self.findings]
        if len(set(kinds)) != len(kinds):
            raise PhantomError(f"FindingsSpec.findings holds a kind twice: {kinds}")

    def get(self, kind: str) -> Finding | None:
        """The finding of this kind, or None."""
        return next((f for f in self.findings if f.kind == kind), None)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds present, in spec order."""
        return tuple(f.kind for f in self.findings)

    def labels(self) -> dict[str, str]:
        """CheXpert observations made positive by this spec.

        As in the CheXpert labeler, support devices alone still count as "No Finding".
        """
        labels: dict[str, str] = {}
        for f in self.findings:
            for name in _KIND_LABELS[f.kind]:
                labels[name] = "positive"
        if not (set(labels) - {"Support Devices"}):
            labels["No Finding"] = "positive"
        return {name: labels[name] for name in CHEXPERT_OBSERVATIONS if name in labels}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written to reports.jsonl (`from_dict` reads it back)."""
        return {"findings": [f.as_dict() for f in self.findings]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FindingsSpec:
        """Inverse of `as_dict`."""
        items = []
        for item in data.get("findings", []):
            kw = dict(item)
            kw["devices"] = tuple(kw.get("devices", ()))
            items.append(Finding(**kw))
        return cls(tuple(items))


def sample_finding(kind: str, rng: np.random.Generator) -> Finding:
    """Draw the details (side, size, zone, ...) of one finding of `kind`.

    Args:
        kind: one of `KINDS`.
        rng: the study's spec generator; the number of draws depends on `kind` only.

    Returns:
        A valid `Finding` of that kind.

    Raises:
        PhantomError: `kind` is not one of `KINDS`.
    """
    if kind == "cardiomegaly":
        return Finding(kind, size=str(rng.choice(["mild", "moderate"])))
    if kind == "edema":
        return Finding(kind, size=str(rng.choice(["mild", "moderate"])))
    if kind == "pleural_effusion":
        side = str(rng.choice(["right", "left", "bilateral"], p=[0.4, 0.35, 0.25]))
        return Finding(kind, side=side, size=str(rng.choice(["small", "moderate", "large"])))
    if kind == "pneumothorax":
        return Finding(
            kind,
            side=str(rng.choice(["right", "left"])),
            size=str(rng.choice(["small", "moderate", "large"])),
        )
    if kind == "nodule":
        mass = rng.random() < 0.35
        size_mm = float(round(rng.uniform(32, 60) if mass else rng.uniform(10, 26)))
        return Finding(
            kind, side=str(rng.choice(["right", "left"])), zone=str(rng.choice(ZONES)), size_mm=size_mm
        )
    if kind == "consolidation":
        side = str(rng.choice(["right", "left"]))
        return Finding(kind, side=side, zone=str(rng.choice(LOBES[side])))
    if kind == "atelectasis":
        side = str(rng.choice(["right", "left", "bilateral"], p=[0.4, 0.4, 0.2]))
        zone = "lower" if side == "bilateral" else str(rng.choice(["lower", "upper"], p=[0.8, 0.2]))
        return Finding(kind, side=side, zone=zone)
    if kind == "support_devices":
        k = 1 if rng.random() < 0.7 else 2
        picked = sorted(rng.choice(len(DEVICES), size=k, replace=False).tolist())
        return Finding(kind, devices=tuple(DEVICES[i] for i in picked))
    raise PhantomError(f"unknown finding kind {kind!r}; expected one of {KINDS}")


def sample_spec(
    rng: np.random.Generator, p_count: tuple[float, float, float] = (0.3, 0.5, 0.2)
) -> FindingsSpec:
    """Draw a spec with 0, 1 or 2 findings, kinds uniform without repeats.

    Args:
        rng: the study's spec generator.
        p_count: weights of 0, 1 and 2 findings (normalised here).

    Returns:
        The spec, findings in `KINDS` order.
    """
    count = int(rng.choice(3, p=np.asarray(p_count) / sum(p_count)))
    kinds = rng.choice(len(KINDS), size=count, replace=False).tolist()
    return FindingsSpec(tuple(sample_finding(KINDS[k], rng) for k in sorted(kinds)))
