"""Classification-guided drafting: a multi-label findings head on the vision tower (PromptMRG, RaDialog).

The head reads the tower the decoder reads, and its predictions go into the drafting prompt as words
("Image classifier: left pleural effusion, cardiomegaly."), so the decoder learns to verbalise what
the classifier sees; the dashboard shows the same per-finding probabilities beside the draft.

    tower(pixel_values).last_hidden_state          (B * views, T, D)
    pool: [first token, mean, max] over tokens     (B * views, 3D)   max keeps small findings (nodules)
    + optional convolutional branch on the pixels  (B * views, 2C)   mean and max of a small CNN's last map
    views side by side (a missing lateral: zeros)  (B, views * (3D + 2C))
    MLP: Linear -> GELU -> Linear                  (B, K) logits, K = len(spec.targets)

Why the convolutional branch (`HeadSpec.conv`): a ViT with 16-px patches at 96 px sees a 10 mm nodule
as ~2 px inside one patch and a catheter as a sub-pixel line; measured on phantoms from an unseen
seed, the tower-only head reached F1 0.25 (nodule/mass) and 0.36 (support devices), a 4-stage CNN of
~0.2 M parameters on the same 96-px pixels 0.78 and 0.71 (`train_demo.yaml` tuning notes).

Targets are CheXpert observations (`medvlm.labeler.OBSERVATIONS`) plus one target per side of the
sided ones ("Pleural Effusion|left", "Pleural Effusion|right"; bilateral = both), trained from the
labeler's labels of the training reports (`targets_from_labels`). Saved beside a checkpoint as
`findings_head.safetensors` (weights) + `findings_head.json` (`HeadSpec`), hashed in its manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medvlm.labeler import NEGATIVE, OBSERVATIONS, Label

if TYPE_CHECKING:
    import torch

HEAD_WEIGHTS = "findings_head.safetensors"
HEAD_SPEC = "findings_head.json"
SIDED: tuple[str, ...] = ("Pleural Effusion", "Pneumothorax", "Lung Lesion", "Consolidation", "Atelectasis")
"""Observations whose side the head predicts (one extra target per side)."""
SIDES = ("left", "right")


def default_targets() -> tuple[str, ...]:
    """The 14 observations, then "<observation>|left" / "|right" for each of `SIDED`."""
    return (*OBSERVATIONS, *(f"{obs}|{side}" for obs in SIDED for side in SIDES))


@dataclass(frozen=True)
class HeadSpec:
    """What a findings head predicts and how it is built (saved as `findings_head.json`)."""

    width: int
    """Hidden size D of the vision tower it reads."""
    targets: tuple[str, ...] = field(default_factory=default_targets)
    """Output names: observations, and "<observation>|<side>" side targets."""
    hidden: int = 256
    """MLP hidden width."""
    views: int = 1
    """Views pooled side by side: 1 (frontal) or 2 (frontal + lateral; a missing lateral reads as zeros)."""
    threshold: float = 0.5
    """A finding goes into the prompt (and counts as predicted) at or above this probability."""
    conv: tuple[int, ...] = ()
    """Channel widths of the convolutional branch on the pixels (one stride-2 block each); () = none."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "conv", tuple(int(c) for c in self.conv))
        if self.views not in (1, 2) or self.width < 1 or self.hidden < 1 or not 0.0 < self.threshold < 1.0:
            raise ValueError(f"HeadSpec: views must be 1 or 2, width/hidden >= 1, threshold in (0, 1); got {self}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`from_dict` reads it back)."""
        return {**asdict(self), "targets": list(self.targets), "conv": list(self.conv)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadSpec:
        """Inverse of `to_dict`."""
        return cls(**{**data, "targets": tuple(data["targets"]), "conv": tuple(data.get("conv", ()))})


def targets_from_labels(labels: Mapping[str, Label], targets: Sequence[str]) -> np.ndarray:
    """Multi-hot training target of one report from its labeler labels.

    Positive and uncertain both count as present (CheXpert's "U-ones"); a side target is 1 when the
    observation is present on that side or bilateral.

    Returns:
        (K,) float32 in {0, 1}.
    """
    out = np.zeros(len(targets), dtype=np.float32)
    for k, name in enumerate(targets):
        obs, _, side = name.partition("|")
        label = labels.get(obs)
        if label is None or label.value == NEGATIVE:
            continue
        if not side or label.laterality in (side, "bilateral"):
            out[k] = 1.0
    return out


def _conv_branch(widths: Sequence[int]) -> Any:
    """Stride-2 blocks (conv 3x3 s2, BatchNorm, GELU, conv 3x3, BatchNorm, GELU) from one grey channel.

    BatchNorm: measured on unseen phantoms it beat GroupNorm clearly (nodule/mass F1 0.78 vs 0.52, support
    devices 0.71 vs 0.44, same steps). The head reads in eval mode outside the classify stage (running
    statistics), so a study's probabilities do not depend on the batch it is drafted in.
    """
    from torch import nn

    layers, c_in = [], 1
    for c in widths:
        layers += [nn.Conv2d(c_in, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.GELU(),
                   nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.GELU()]
        c_in = c
    return nn.Sequential(*layers)


def build_head_module(spec: HeadSpec) -> Any:
    """The head as a `torch.nn.Module`: `forward(hidden_states (B*views, T, D), pixel_values) -> logits (B, K)`.

    `pixel_values` (B*views, 3, S, S), normalised tower input, is read only by the convolutional branch.
    """
    import torch
    from torch import nn

    per_view = 3 * spec.width + (2 * spec.conv[-1] if spec.conv else 0)

    class FindingsHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if spec.conv:
                self.conv = _conv_branch(spec.conv)
            self.norm = nn.LayerNorm(per_view * spec.views)
            self.mlp = nn.Sequential(
                nn.Linear(per_view * spec.views, spec.hidden), nn.GELU(), nn.Linear(spec.hidden, len(spec.targets))
            )

        def forward(self, hidden_states: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
            parts = [hidden_states[:, 0], hidden_states.mean(dim=1), hidden_states.amax(dim=1)]  # 3 x (B*views, D)
            if spec.conv:
                if pixel_values is None:
                    raise ValueError("this findings head has a convolutional branch: pass pixel_values")
                maps = self.conv(pixel_values[:, :1].float())  # (B*views, C, s, s)
                parts += [maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))]
            pooled = torch.cat(parts, dim=-1)  # (B*views, 3D + 2C)
            pooled = pooled.reshape(-1, spec.views * pooled.shape[-1])  # (B, views * (3D + 2C))
            return self.mlp(self.norm(pooled))  # (B, K)

    return FindingsHead()


@dataclass
class FindingsClassifier:
    """A findings head and its spec; it reads whichever tower it is given (the bundle's)."""

    spec: HeadSpec
    """Targets, sizes, threshold."""
    module: Any
    """The `torch.nn.Module` from `build_head_module`."""

    @classmethod
    def create(cls, spec: HeadSpec, seed: int = 0) -> FindingsClassifier:
        """A freshly initialised head (its own seeded RNG: the caller's torch RNG is untouched)."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(spec, build_head_module(spec))

    def logits(self, tower: Any, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, K) logits for `pixel_values` (B * views, 3, S, S), views of a study consecutive."""
        dtype = next(tower.parameters()).dtype
        hidden = tower(pixel_values=pixel_values.to(dtype), return_dict=True).last_hidden_state  # (B*views, T, D)
        if hidden.shape[-1] != self.spec.width:
            raise ValueError(f"tower width {hidden.shape[-1]} != head width {self.spec.width}")
        return self.module(hidden.float(), pixel_values)

    def probabilities(self, tower: Any, studies: Sequence[Sequence[np.ndarray]], model_cfg: Any,
                      batch_size: int = 32) -> np.ndarray:
        """Per-study probabilities, (N, K), from each study's views (float [0, 1] (H, W), frontal first)."""
        import torch

        device = next(tower.parameters()).device
        self.module.to(device).eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(studies), batch_size):
                views = [v for s in studies[start : start + batch_size] for v in study_views(s, self.spec.views)]
                pv = pixel_values(views, model_cfg).to(device)  # (B*views, 3, S, S)
                out.append(torch.sigmoid(self.logits(tower, pv)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.spec.targets)), np.float32)

    def save(self, directory: str | Path) -> list[Path]:
        """Write `findings_head.safetensors` + `findings_head.json` into `directory`; returns both paths."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(directory / HEAD_WEIGHTS))
        (directory / HEAD_SPEC).write_text(json.dumps(self.spec.to_dict(), indent=2), encoding="utf-8")
        return [directory / HEAD_WEIGHTS, directory / HEAD_SPEC]

    @classmethod
    def load(cls, directory: str | Path) -> FindingsClassifier | None:
        """The head saved in `directory` (strict weight check), or None when there is none."""
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / HEAD_SPEC).is_file():
            return None
        spec = HeadSpec.from_dict(json.loads((directory / HEAD_SPEC).read_text(encoding="utf-8")))
        head = cls(spec, build_head_module(spec))
        try:
            head.module.load_state_dict(load_file(str(directory / HEAD_WEIGHTS)), strict=True)
        except RuntimeError as exc:  # missing / unexpected / mis-shaped tensors: never run a half-random head
            from medvlm.errors import CheckpointError

            raise CheckpointError(f"{directory / HEAD_WEIGHTS} does not match {HEAD_SPEC} ({str(exc)[:300]}): "
                                  "retrain the classify stage with this version of medvlm") from None
        head.module.eval()
        return head


def study_views(images: Sequence[np.ndarray], views: int) -> list[np.ndarray]:
    """The first `views` images of a study; a missing lateral is a blank image of the frontal's shape."""
    out = list(images[:views])
    while len(out) < views:
        out.append(np.zeros_like(np.asarray(images[0], dtype=np.float32)))
    return out


def pixel_values(images: Sequence[np.ndarray], model_cfg: Any) -> torch.Tensor:
    """(B, 3, S, S) float32 tower input of single views, resized and normalised as the processor does."""
    import torch

    from medvlm.processor import resize_float

    mean = np.asarray(model_cfg.image_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(model_cfg.image_std, dtype=np.float32)[:, None, None]
    size = model_cfg.image_size
    arr = np.stack([(np.repeat(resize_float(np.asarray(i, np.float32), size)[None], 3, 0) - mean) / std for i in images])
    return torch.from_numpy(arr.astype(np.float32))


def finding_probabilities(row: Sequence[float], spec: HeadSpec) -> dict[str, float]:
    """One study's probabilities by target name, rounded to 3 decimals (JSON for the draft store)."""
    return {name: round(float(p), 3) for name, p in zip(spec.targets, row, strict=True)}


def predicted_findings(probabilities: Mapping[str, float], threshold: float = 0.5) -> dict[str, str | None]:
    """Observations at or above `threshold` (No Finding left out), each with its side or None.

    The side is "bilateral" when both side targets pass, the one that passes, else the likelier
    side when it reaches half the threshold (a side is stated only when the head leans to one).
    """
    out: dict[str, str | None] = {}
    for name, p in probabilities.items():
        if "|" in name or name == "No Finding" or p < threshold:
            continue
        side = None
        if name in SIDED:
            left, right = (probabilities.get(f"{name}|{s}", 0.0) for s in SIDES)
            if left >= threshold and right >= threshold:
                side = "bilateral"
            elif max(left, right) >= threshold / 2:
                side = "left" if left >= right else "right"
        out[name] = side
    return out


def findings_hint(probabilities: Mapping[str, float], threshold: float = 0.5) -> str:
    """The prompt line: "left pleural effusion, cardiomegaly" (or "no finding"), observation order."""
    found = predicted_findings(probabilities, threshold)
    words = [f"{side} {obs.lower()}" if side else obs.lower() for obs, side in found.items()]
    return ", ".join(words) if words else "no finding"


def study_probabilities(bundle: Any, studies: Sequence[Sequence[np.ndarray]]) -> list[dict[str, float]] | None:
    """Per-study finding probabilities from the bundle's head on its own tower, or None without a head.

    Args:
        bundle: a `MedVLM` (its `head` and the vision tower of its LLaVA model).
        studies: each study's views, float [0, 1] (H, W), frontal first.

    Returns:
        One `{target: probability}` per study, or None when the bundle has no head.
    """
    head = getattr(bundle, "head", None)
    if head is None:
        return None
    tower = bundle.llava.model.vision_tower
    was_training = tower.training
    tower.eval()
    try:
        rows = head.probabilities(tower, studies, bundle.config)
    finally:
        tower.train(was_training)
    return [finding_probabilities(row, head.spec) for row in rows]


def head_readings(bundle: Any, studies: Sequence[Sequence[np.ndarray]]) -> list[dict[str, float] | None]:
    """`study_probabilities`, or one None per study when the bundle has no head."""
    probs = study_probabilities(bundle, studies)
    return list(probs) if probs is not None else [None] * len(studies)


def probability_rows(probabilities: Mapping[str, float], min_probability: float = 0.05) -> list[tuple[str, float, str]]:
    """What a reviewer sees of the head's reading: (observation, probability, side text), likeliest first.

    Observations under `min_probability` and "No Finding" are left out; the side text gives the side
    targets' probabilities ("left 0.91, right 0.08") where the head has them, else "".
    """
    rows = []
    for name, p in probabilities.items():
        if "|" in name or name == "No Finding" or p < min_probability:
            continue
        sides = [(s, probabilities.get(f"{name}|{s}")) for s in SIDES]
        side_text = ", ".join(f"{s} {q:.2f}" for s, q in sides if q is not None)
        rows.append((name, float(p), side_text))
    return sorted(rows, key=lambda r: -r[1])
