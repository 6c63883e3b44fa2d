"""Synthetic chest-radiograph phantom studies: findings spec -> pixels -> real DICOM + report.

The phantoms exist so that tests and the demo can prove that the image conditions the report:
every finding in a study's spec is drawn into its pixels on the stated side, and the report and
labels are assembled from that same spec. Nothing here is patient data: names are `PHANTOM^0007`,
IDs `PH0007`, UIDs are derived from (seed, study index) under pydicom's root.

Layout written by `generate_phantoms(out, n=..., seed=...)`::

    out/reports.jsonl                 one JSON object per study (see `PhantomStudy.record`)
    out/PH0000/1_PA/1.dcm             frontal view (PA or AP), series 1
    out/PH0000/2_LL/1.dcm             left lateral view, series 2

Transfer syntaxes cycle over the studies (study i uses `config.transfer_syntaxes[i % k]`, both of
its views): Explicit VR LE, Implicit VR LE, Deflated Explicit VR LE (pydicom writes the deflate
itself), RLE Lossless (pydicom's native encoder), JPEG-LS Lossless (`pyjpegls` plugin) and
JPEG 2000 Lossless (`pylibjpeg-openjpeg` plugin), the last three through `Dataset.compress(...,
generate_instance_uid=False)` so that the SOP Instance UID stays deterministic. A syntax whose
encoder plugin is missing is skipped (and absent from the summary), never an error.

Radiographic convention: in a frontal view the patient's LEFT is on the image's RIGHT (columns
> W/2). `render_frontal` / `render_lateral` return float32 images in [0, 1] in display convention
(bright = dense); MONOCHROME1 files store the inverted values so that they display the same.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from medvlm.labeler import OBSERVATIONS
from pipelines.phantoms import phrases as P

# ---------------------------------------------------------------------------------------------------
# Findings spec
# ---------------------------------------------------------------------------------------------------

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
            raise ValueError(f"Finding.kind must be one of {KINDS}, got {self.kind!r}")
        sides = _ALLOWED_SIDES.get(self.kind)
        if sides is None and self.side is not None:
            raise ValueError(f"Finding.side must be None for {self.kind}, got {self.side!r}")
        if sides is not None and self.side not in sides:
            raise ValueError(f"Finding.side for {self.kind} must be one of {sides}, got {self.side!r}")
        sizes = _ALLOWED_SIZES.get(self.kind)
        if sizes is not None and self.size not in sizes:
            raise ValueError(f"Finding.size for {self.kind} must be one of {sizes}, got {self.size!r}")
        if self.kind in ("nodule", "atelectasis") and self.zone not in ZONES:
            raise ValueError(f"Finding.zone for {self.kind} must be one of {ZONES}, got {self.zone!r}")
        if self.kind == "consolidation" and self.zone not in LOBES.get(self.side or "", ()):
            raise ValueError(f"Finding.zone for consolidation must be a {self.side} lobe, got {self.zone!r}")
        if self.kind == "nodule" and not (self.size_mm and 3.0 <= self.size_mm <= 100.0):
            raise ValueError(f"Finding.size_mm for a nodule must be in [3, 100], got {self.size_mm!r}")
        if self.kind == "support_devices" and (not self.devices or set(self.devices) - set(DEVICES)):
            raise ValueError(f"Finding.devices must be a non-empty subset of {DEVICES}, got {self.devices!r}")

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
            raise ValueError(f"FindingsSpec.findings holds a kind twice: {kinds}")

    def get(self, kind: str) -> Finding | None:
        """The finding of this kind, or None."""
        return next((f for f in self.findings if f.kind == kind), None)

    @property
    def kinds(self) -> tuple[str, ...]:
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
    """Draw the details (side, size, zone, ...) of one finding of `kind`."""
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
    raise ValueError(f"unknown finding kind {kind!r}; expected one of {KINDS}")


def sample_spec(
    rng: np.random.Generator, p_count: tuple[float, float, float] = (0.3, 0.5, 0.2)
) -> FindingsSpec:
    """Draw a spec with 0, 1 or 2 findings (probabilities `p_count`), kinds uniform without repeats."""
    count = int(rng.choice(3, p=np.asarray(p_count) / sum(p_count)))
    kinds = rng.choice(len(KINDS), size=count, replace=False).tolist()
    return FindingsSpec(tuple(sample_finding(KINDS[k], rng) for k in sorted(kinds)))


# ---------------------------------------------------------------------------------------------------
# Rendering helpers (normalised coordinates: u = column / W, v = row / H, both in [0, 1])
# ---------------------------------------------------------------------------------------------------


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"image size must be at least 32x32, got {h}x{w}")
    return h, w


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    return (u + 0.5) / w, (v + 0.5) / h


def _step(x: np.ndarray, width: float) -> np.ndarray:
    """Soft step 0 -> 1 across x = 0 over about `width` (same units as x)."""
    return (0.5 * (1.0 + np.tanh(x / width))).astype(np.float32)


def _blob(u: np.ndarray, v: np.ndarray, cu: float, cv: float, su: float, sv: float) -> np.ndarray:
    return np.exp(-(((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2) / 2.0).astype(np.float32)


def _ellipse(
    u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float, edge: float, angle: float = 0.0
) -> np.ndarray:
    """Soft filled ellipse, axes rotated by `angle` radians; `edge` is the blur width (normalised)."""
    du, dv = u - cu, v - cv
    if angle:
        c, s_ = math.cos(angle), math.sin(angle)
        du, dv = c * du + s_ * dv, -s_ * du + c * dv
    r = np.sqrt((du / ru) ** 2 + (dv / rv) ** 2)
    return _step((1.0 - r) * min(ru, rv), edge)


def _polyline(
    canvas: np.ndarray, pts: np.ndarray, width: float | np.ndarray, value: float, combine: str = "add"
) -> None:
    """Add an anti-aliased polyline (normalised points, shape (K, 2) as (u, v)) to `canvas` in place.

    `width` is normalised (fraction of image width), scalar or one per segment. Segments of one
    line overlap by maximum (uniform density); `combine` "add" adds the line to `canvas`, "max"
    keeps the larger of the two (crossing vessels do not add up).
    """
    h, w = canvas.shape
    widths = np.broadcast_to(np.asarray(width, dtype=np.float64), (len(pts) - 1,))
    layer = np.zeros_like(canvas)
    for (u0, v0), (u1, v1), wd in zip(pts[:-1], pts[1:], widths, strict=True):
        x0, y0, x1, y1 = u0 * w, v0 * h, u1 * w, v1 * h
        r = max(wd * w / 2.0, 0.5)
        xa, xb = max(int(min(x0, x1) - r - 2), 0), min(int(max(x0, x1) + r + 3), w)
        ya, yb = max(int(min(y0, y1) - r - 2), 0), min(int(max(y0, y1) + r + 3), h)
        if xa >= xb or ya >= yb:
            continue
        yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float32) + 0.5
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
        d = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))
        cover = np.clip(r + 0.5 - d, 0.0, 1.0)
        np.maximum(layer[ya:yb, xa:xb], cover, out=layer[ya:yb, xa:xb])
    if combine == "max":
        np.maximum(canvas, value * layer, out=canvas)
    else:
        canvas += value * layer


def _curve(points: list[tuple[float, float]], k: int = 24) -> np.ndarray:
    """A smooth curve through control points (quadratic B-spline-like corner cutting)."""
    pts = np.asarray(points, dtype=np.float64)
    for _ in range(3):  # Chaikin corner cutting, ends kept
        if len(pts) > k:
            break
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        pts = np.vstack([pts[:1], np.stack([q, r], axis=1).reshape(-1, 2), pts[-1:]])
    return pts


@dataclass(frozen=True)
class _Body:
    """Per-study patient and exposure parameters (drawn, then adjusted by the spec)."""

    ctr: float  # cardiothoracic ratio
    lung_w: float  # half inner thoracic width (normalised)
    apex: float  # lung apex row
    dome_r: float  # right / left hemidiaphragm dome rows
    dome_l: float
    air: float  # lung air (density removed inside the lungs)
    mu: float  # exposure: attenuation scale in 1 - exp(-mu * density)
    angle: float  # in-plane rotation (degrees)
    shift: tuple[float, float]  # (du, dv)
    scale: float
    noise: float
    heel: float
    tissue: float  # soft tissue density (patient size)


def _draw_body(rng: np.random.Generator, spec: FindingsSpec) -> _Body:
    # Draw every number first (a fixed count), then adjust by spec, so that the same seed renders
    # the same patient whatever the findings are (tests compare a finding against its normal twin).
    ctr, lung_w, apex, dome_r, dlr, air, mu, angle, du, dv, scale, noise, heel, tissue = (
        rng.uniform(0.40, 0.48),
        rng.uniform(0.35, 0.38),
        rng.uniform(0.075, 0.10),
        rng.uniform(0.60, 0.64),
        rng.uniform(0.015, 0.035),
        rng.uniform(0.60, 0.72),
        rng.uniform(1.25, 1.55),
        rng.uniform(-3.0, 3.0),
        rng.uniform(-0.02, 0.02),
        rng.uniform(-0.02, 0.02),
        rng.uniform(0.94, 1.03),
        rng.uniform(0.008, 0.018),
        rng.uniform(-0.05, 0.05),
        rng.uniform(0.9, 1.1),
    )
    ctr_draw = rng.uniform(0.0, 1.0)
    cm = spec.get("cardiomegaly")
    if cm is not None:
        lo, hi = (0.57, 0.61) if cm.size == "mild" else (0.62, 0.68)
        ctr = lo + (hi - lo) * ctr_draw
    dome_l = dome_r + dlr
    at = spec.get("atelectasis")
    if at is not None:  # volume loss: the hemidiaphragm on that side rises
        lift = 0.045 if at.zone == "lower" else 0.025
        if at.side in ("right", "bilateral"):
            dome_r -= lift
        if at.side in ("left", "bilateral"):
            dome_l -= lift
    return _Body(ctr, lung_w, apex, dome_r, dome_l, air, mu, angle, (du, dv), scale, noise, heel, tissue)


def _finish(density: np.ndarray, body: _Body, rng: np.random.Generator) -> np.ndarray:
    """Density -> display intensity; rotate / scale / shift, add heel effect and noise."""
    from scipy import ndimage

    h, w = density.shape
    img = 1.0 - np.exp(-body.mu * density)
    img /= 1.0 - math.exp(-body.mu * 2.6)  # full scale at about bone + soft tissue
    theta = math.radians(body.angle)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]) / body.scale
    centre = np.array([h / 2.0, w / 2.0])
    offset = centre - rot @ centre - np.array([body.shift[1] * h, body.shift[0] * w])
    img = ndimage.affine_transform(img, rot, offset=offset, order=1, mode="constant", cval=0.0)
    _, v = _grid(h, w)
    img = img * (1.0 + body.heel * (v - 0.5) * 2.0)
    speckle = rng.standard_normal((h, w)).astype(np.float32)
    mottle = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma=max(h / 64, 1.0))
    img = img + body.noise * speckle + 2.0 * body.noise * mottle * (h / 64)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _side_mask(u: np.ndarray, side: str, edge: float) -> np.ndarray:
    """Patient side in a frontal image: patient RIGHT is the image's LEFT half."""
    if side == "right":
        return _step(0.5 - u, edge)
    if side == "left":
        return _step(u - 0.5, edge)
    return np.ones_like(u)


def _sides(side: str) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else (side,)


def _u_of(side: str, s: float) -> float:
    """Column of lateral distance `s` from the midline on the patient's `side` (frontal)."""
    return 0.5 - s if side == "right" else 0.5 + s


def _vessels(
    canvas: np.ndarray, rng: np.random.Generator, hila: list[tuple[float, float]], n: int, reach: float
) -> None:
    """Branching, tapering vessel markings radiating from each hilum (drawn into `canvas`)."""
    for hu, hv in hila:
        outward = -1.0 if hu < 0.5 else 1.0
        for _ in range(n):
            ang = rng.uniform(-1.9, 1.9)  # radians from "lateral"; upward and downward fans
            length = reach * rng.uniform(0.55, 1.0)
            k = 6
            cu, cv, a = hu + rng.normal(0.0, 0.012), hv + rng.normal(0.0, 0.02), ang
            pts = [(cu, cv)]
            for _j in range(k):
                a += rng.normal(0.0, 0.18)
                cu += outward * math.cos(a) * length / k
                cv += math.sin(a) * length / k * 0.9
                pts.append((cu, cv))
            widths = np.linspace(0.012, 0.003, k)
            _polyline(canvas, np.asarray(pts), widths, 1.0, combine="max")
            if rng.random() < 0.7:  # one side branch
                j = int(rng.integers(1, k - 2))
                bu, bv = pts[j]
                b = ang + rng.choice([-0.6, 0.6])
                ends = [
                    (bu, bv),
                    (bu + outward * math.cos(b) * length * 0.35, bv + math.sin(b) * length * 0.3),
                ]
                _polyline(canvas, np.asarray(ends), 0.004, 1.0, combine="max")


def _patch(
    u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float, rng: np.random.Generator
):
    """Patchy airspace opacity: a soft ellipse modulated by smoothed noise."""
    from scipy import ndimage

    h, w = u.shape
    env = _blob(u, v, cu, cv, ru / 1.6, rv / 1.6)
    tex = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma=max(w / 90, 1.0))
    tex = tex / (tex.std() + 1e-6)
    return np.clip(env * (0.75 + 0.45 * tex), 0.0, 1.2)


# ---------------------------------------------------------------------------------------------------
# Frontal (PA / AP) view
# ---------------------------------------------------------------------------------------------------


def render_frontal(
    spec: FindingsSpec, size: int | tuple[int, int] = 512, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Render a frontal chest radiograph phantom.

    Args:
        spec: the findings to draw (sides are the patient's; patient left = image right).
        size: output size, an int (square) or (H, W).
        rng: the study's generator; the same generator state gives the same patient, so a spec
            and its normal twin rendered from equal generators differ only by the findings.

    Returns:
        float32 array (H, W) in [0, 1], display convention (bright = dense).
    """
    from scipy import ndimage

    h, w = _hw(size)
    rng = rng if rng is not None else np.random.default_rng(0)
    body_rng, mark_rng, find_rng, noise_rng = rng.spawn(4)
    b = _draw_body(body_rng, spec)
    u, v = _grid(h, w)
    e = 1.2 / w  # edge softness: about a pixel
    s = np.abs(u - 0.5)  # lateral distance from the midline
    right = u < 0.5  # patient right
    dome = np.where(right, b.dome_r, b.dome_l)

    # Body outline: neck widening into shoulders, soft tissue thicker in the middle.
    half = 0.13 + 0.33 * np.clip(v / 0.14, 0, 1) ** 0.6 - 0.03 * v
    thick = np.sqrt(np.clip(1.0 - (s / half) ** 2, 0.0, 1.0))
    density = b.tissue * (0.35 + 0.65 * thick) * _step(half - s, 2 * e)
    below = _step(v - dome - 0.14 * ((s - 0.17) / (b.lung_w - 0.17)) ** 2, 2 * e)
    density += 0.08 * below * _step(half - s, 2 * e)  # abdomen under the domes

    # Lungs: chest wall laterally, apex, diaphragm domes (costophrenic angles laterally), mediastinum.
    s_lat = b.lung_w * (0.2 + 0.8 * np.sqrt(np.clip((v - b.apex) / 0.6, 0, 1)))
    dome_curve = dome + 0.14 * ((s - 0.17) / (b.lung_w - 0.17)) ** 2
    heart_w = b.ctr * 2.0 * b.lung_w
    # Heart: right border (right atrium) a third of its width right of the midline, the left
    # ventricle bulging down and to the patient's left; total width = ctr * inner thoracic width.
    heart_r, heart_l = 0.5 - 0.3 * heart_w, 0.5 + 0.7 * heart_w
    heart_cu, heart_cv = (heart_r + 0.02 + heart_l) / 2.0, b.dome_l - 0.085
    lv = _ellipse(u, v, heart_cu, heart_cv, (heart_l - heart_r - 0.02) / 2.0, 0.12, 2 * e, angle=0.35)
    ra = _ellipse(u, v, heart_r + 0.055, heart_cv + 0.01, 0.055, 0.085, 2 * e)
    heart = np.maximum(lv, ra)
    heart = np.maximum(
        heart,
        _step(heart_cv - v, 2 * e)
        * _step(v - b.apex - 0.2, 2 * e)
        * (1.0 - _step(np.abs(u - 0.5 - 0.02) - 0.06, 2 * e)),
    )
    knob = _ellipse(u, v, 0.555, b.apex + 0.2, 0.035, 0.03, 2 * e)
    # Hemithorax: where pleural fluid can lie (lung plus the space over the dome and behind the heart).
    thorax = _step(s_lat - s, 2 * e) * _step(v - b.apex, 2 * e) * _step(dome_curve + 0.01 - v, 2 * e)
    thorax = thorax * _step(s - 0.055, 2 * e)
    lung = thorax * _step(dome_curve - v, 2 * e) * (1.0 - heart) * (1.0 - knob)
    density += 0.12 * heart
    # Lungs are thickest in their middle: a blurred mask gives rounded lucency towards the edges.
    lung_depth = ndimage.gaussian_filter(lung, sigma=0.012 * w) * lung
    air = b.air * lung_depth
    hila = [(0.5 - 0.11, b.apex + 0.33), (0.5 + 0.105, b.apex + 0.31)]
    density += 0.15 * (_blob(u, v, *hila[0], 0.025, 0.035) + _blob(u, v, *hila[1], 0.025, 0.035))

    # Vessel markings (visible only in aerated lung).
    marks = np.zeros((h, w), np.float32)
    _vessels(marks, mark_rng, hila, n=14, reach=0.3)
    marks = ndimage.gaussian_filter(marks, sigma=0.0015 * w + 0.3) * lung

    # Spine, trachea and main bronchi, ribs, clavicles, humeral heads, gastric bubble.
    verteb = 0.93 + 0.07 * np.cos(2 * np.pi * v / 0.055)
    density += 0.2 * _step(0.035 - np.abs(u - 0.5), 2 * e) * verteb * _step(v - 0.02, e)
    density -= 0.22 * _step(0.014 - np.abs(u - 0.5), e) * _step(b.apex + 0.22 - v, 2 * e)
    carina = (0.5, b.apex + 0.22)
    _polyline(marks, np.asarray([carina, (0.43, b.apex + 0.29)]), 0.022, -1.2)
    _polyline(marks, np.asarray([carina, (0.575, b.apex + 0.28)]), 0.02, -1.2)
    ribs = np.zeros((h, w), np.float32)
    for i in range(10):
        v0 = b.apex + 0.04 + i * 0.062
        rib_v = v0 + 1.1 * (s - 0.12) ** 2 - 0.016
        band = _step(0.011 + 0.01 * s - np.abs(v - rib_v), e)
        ribs += band * _step(s_lat + 0.03 - s, 2 * e) * _step(s - 0.04, 2 * e)
    for i in range(6):  # anterior ribs: fainter, sloping down towards the midline
        v0 = b.apex + 0.12 + i * 0.07
        rib_v = v0 + 0.35 * (b.lung_w - s) - 0.04 * ((b.lung_w - s) / b.lung_w) ** 2
        band = _step(0.008 - np.abs(v - rib_v), e)
        ribs += 0.45 * band * _step(s_lat + 0.02 - s, 2 * e) * _step(s - 0.09, 2 * e)
    density += 0.08 * ribs
    clav_v = b.apex + 0.06 - 0.2 * (s - 0.04) + 0.55 * (s - 0.16) ** 2
    density += 0.3 * _step(0.012 - np.abs(v - clav_v), e) * _step(s - 0.035, 2 * e) * _step(0.33 - s, 4 * e)
    for side in ("right", "left"):
        density += 0.35 * _ellipse(u, v, _u_of(side, 0.43), b.apex + 0.06, 0.05, 0.055, 2 * e)
    density -= 0.3 * _ellipse(u, v, 0.5 + 0.15, b.dome_l + 0.05, 0.035, 0.022, 3 * e)

    # Findings.
    mark_w = 0.06
    for f in spec.findings:
        if f.kind == "pleural_effusion":
            rise = {"small": 0.06, "moderate": 0.15, "large": 0.27}[f.size or "small"]
            for sd in _sides(f.side or "right"):
                cp = (b.dome_r if sd == "right" else b.dome_l) + 0.14
                level = cp - rise - 0.05 * (s / b.lung_w)  # meniscus: higher along the lateral wall
                fluid = _step(v - level, 3 * e) * thorax * _side_mask(u, sd, e)
                density += fluid * (0.04 + 0.85 * air)
                air = air * (1.0 - fluid)
                marks = marks * (1.0 - fluid)
        elif f.kind == "pneumothorax":
            depth = {"small": 0.035, "moderate": 0.07, "large": 0.12}[f.size or "small"]
            side_m = _side_mask(u, f.side or "right", e)
            inner = _step((s_lat - depth) - s, e) * _step(v - (b.apex + 1.3 * depth), e)
            upper = _step(b.apex + 0.45 + depth - v, 0.04)
            ptx = lung * side_m * (1.0 - inner) * upper
            marks = marks * (1.0 - ptx)
            air = air + 0.12 * ptx
            pleural_line = 4.0 * inner * (1.0 - inner) * lung * side_m * upper
            density += 0.25 * pleural_line
        elif f.kind == "nodule":
            cv = {"upper": 0.2, "mid": 0.36, "lower": 0.5}[f.zone or "mid"] + b.apex * 0.5
            cv += find_rng.uniform(-0.02, 0.02)
            cu = _u_of(f.side or "right", find_rng.uniform(0.15, b.lung_w - 0.1))
            r = (f.size_mm or 10.0) / 2.0 / 400.0  # field of view about 400 mm
            density += 0.6 * _ellipse(u, v, cu, cv, r, r * find_rng.uniform(0.9, 1.1), 2 * e)
        elif f.kind == "consolidation":
            sd = f.side or "right"
            lobe = (f.zone or "").split()[-2] if " " in (f.zone or "") else (f.zone or "")
            if lobe == "upper":
                ls, lv, rs, rv = 0.2, b.apex + 0.17, 0.1, 0.09
            elif lobe in ("middle", "lingula"):
                ls, lv, rs, rv = 0.1 + (0.14 if sd == "left" else 0.04), 0.5, 0.08, 0.07
            else:
                ls, lv, rs, rv = 0.24, 0.55, 0.1, 0.075
            opac = _patch(u, v, _u_of(sd, ls), lv, rs, rv, find_rng) * lung * _side_mask(u, sd, e)
            density += 0.55 * opac
            marks = marks * (1.0 - np.clip(opac, 0, 1))
        elif f.kind == "atelectasis":
            for sd in _sides(f.side or "right"):
                dv = b.dome_r if sd == "right" else b.dome_l
                if f.zone == "upper":
                    p0, p1 = (0.1, b.apex + 0.2), (b.lung_w - 0.05, b.apex + 0.16)
                else:
                    p0, p1 = (0.09, dv - 0.07), (b.lung_w - 0.05, dv - 0.03)
                band = np.zeros((h, w), np.float32)
                pts = _curve(
                    [
                        (_u_of(sd, p0[0]), p0[1]),
                        (_u_of(sd, (p0[0] + p1[0]) / 2), p0[1] + 0.012),
                        (_u_of(sd, p1[0]), p1[1]),
                    ]
                )
                _polyline(band, pts, 0.022, 1.0)
                band = ndimage.gaussian_filter(band, sigma=0.6) * lung
                density += 0.5 * band
        elif f.kind == "edema":
            amp = 0.3 if f.size == "mild" else 0.5
            haze = _blob(u, v, hila[0][0] - 0.04, hila[0][1] + 0.05, 0.09, 0.12)
            haze += _blob(u, v, hila[1][0] + 0.04, hila[1][1] + 0.05, 0.09, 0.12)
            density += amp * haze * lung
            marks = ndimage.gaussian_filter(marks, sigma=0.006 * w)  # indistinct vessels
            mark_w = 0.09
        elif f.kind == "support_devices":
            dev = np.zeros((h, w), np.float32)
            if "endotracheal_tube" in f.devices:
                tip = b.apex + 0.15
                _polyline(dev, np.asarray([(0.5, 0.0), (0.501, tip)]), 0.022, 0.15)
                _polyline(dev, np.asarray([(0.497, 0.0), (0.499, tip)]), 0.006, 0.9)
            if "central_line" in f.devices:
                pts = _curve(
                    [(0.42, 0.0), (0.44, b.apex + 0.03), (0.465, b.apex + 0.14), (0.475, b.apex + 0.27)]
                )
                _polyline(dev, pts, 0.007, 0.9)
            if "pacemaker" in f.devices:
                box_u, box_v = 0.5 + 0.25, b.apex + 0.1
                dev += 1.6 * _ellipse(u, v, box_u, box_v, 0.045, 0.032, 2 * e)
                for tip in ((0.455, heart_cv - 0.06), (0.5 + 0.1, heart_cv + 0.08)):
                    pts = _curve([(box_u - 0.04, box_v), (0.6, box_v + 0.02), (0.52, b.apex + 0.22), tip])
                    _polyline(dev, pts, 0.006, 0.8)
            density += dev

    density = density - air + mark_w * marks
    return _finish(np.clip(density, 0.0, None), b, noise_rng)


# ---------------------------------------------------------------------------------------------------
# Lateral view (patient facing the image's left: anterior = small u, spine = large u)
# ---------------------------------------------------------------------------------------------------


def render_lateral(
    spec: FindingsSpec, size: int | tuple[int, int] = 512, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Render a left lateral chest radiograph phantom (anterior on the left, spine on the right).

    Args:
        spec: the findings to draw; both lungs superimpose, so unilateral findings are fainter.
        size: output size, an int (square) or (H, W).
        rng: the study's generator (see `render_frontal`).

    Returns:
        float32 array (H, W) in [0, 1], display convention (bright = dense).
    """
    from scipy import ndimage

    h, w = _hw(size)
    rng = rng if rng is not None else np.random.default_rng(0)
    body_rng, mark_rng, find_rng, noise_rng = rng.spawn(4)
    b = _draw_body(body_rng, spec)
    u, v = _grid(h, w)
    e = 1.2 / w

    ant = 0.14 + 0.05 * np.clip((0.35 - v) / 0.35, 0, 1) ** 2  # anterior chest wall
    post = 0.9 - 0.04 * np.clip((0.2 - v) / 0.2, 0, 1)
    mid, half = (ant + post) / 2.0, (post - ant) / 2.0
    thick = np.sqrt(np.clip(1.0 - ((u - mid) / half) ** 2, 0.0, 1.0))
    inside = _step(half - np.abs(u - mid), 2 * e)
    density = 1.25 * b.tissue * (0.4 + 0.6 * thick) * inside
    density += 0.35 * _step(0.2 - v, 0.05) * inside  # shoulders and arms superimposed

    def dome_at(x: np.ndarray | float, base: float) -> np.ndarray | float:
        # Posterior costophrenic sulcus is the deepest point of each hemidiaphragm.
        return base + np.where(np.asarray(x) > 0.42, 1.1, 0.7) * (np.asarray(x) - 0.42) ** 2

    dome1, dome2 = dome_at(u, b.dome_r), dome_at(u, b.dome_l)
    top = np.clip((0.32 - v) / 0.25, 0.0, 1.0) ** 2  # lungs narrow towards the apex
    lung_front = ant + 0.045 + 0.12 * top
    heart_ru = 0.16 * (b.ctr / 0.45) ** 0.9
    heart_cu, heart_cv = 0.14 + 0.045 + heart_ru * 0.85, b.dome_l - 0.07
    heart = _ellipse(u, v, heart_cu, heart_cv, heart_ru, 0.13, 2 * e)
    apex_v = b.apex + 0.01 + 1.0 * (u - 0.55) ** 2
    lung = (
        _ellipse(u, v, 0.5, b.apex + 0.42, 0.31, 0.43, 2 * e)
        * _step(u - lung_front, 2 * e)
        * _step(0.79 - 0.07 * top - u, 2 * e)
        * _step(v - apex_v, 2 * e)
        * _step(np.maximum(dome1, dome2) - v, 2 * e)
        * (1.0 - heart)
    )
    lung_depth = ndimage.gaussian_filter(lung, sigma=0.015 * w) * lung
    air = 1.15 * b.air * lung_depth
    # The lower of the two domes still holds some air above the upper one: a second faint contour.
    density += 0.12 * _step(v - np.minimum(dome1, dome2), 2 * e) * lung
    density += 0.2 * _step(v - np.maximum(dome1, dome2), 2 * e) * inside
    density += 0.12 * heart

    # Spine (vertebral bodies with disc spaces), posterior elements, sternum, trachea, hilum.
    verteb = _step(0.018 - np.abs(((v - 0.01) % 0.06) - 0.03) + 0.012, e)
    density += 0.35 * _step(0.04 - np.abs(u - 0.84), 2 * e) * verteb * _step(v - 0.04, e)
    density += 0.12 * _step(u - 0.885, 2 * e) * inside
    density += 0.3 * _step(0.014 - np.abs(u - (ant + 0.02)), e) * _step(v - 0.15, e) * _step(0.58 - v, e)
    marks = np.zeros((h, w), np.float32)
    _polyline(marks, np.asarray([(0.49, 0.0), (0.53, b.apex + 0.12), (0.56, b.apex + 0.26)]), 0.03, -1.0)
    hilum = (0.56, b.apex + 0.32)
    density += 0.22 * _blob(u, v, *hilum, 0.04, 0.045)
    arch = _curve([(0.45, b.apex + 0.2), (0.53, b.apex + 0.12), (0.62, b.apex + 0.18), (0.66, b.apex + 0.32)])
    _polyline(marks, arch, 0.04, 0.6)
    vessels = np.zeros((h, w), np.float32)
    _vessels(vessels, mark_rng, [hilum, (hilum[0] + 0.001, hilum[1])], n=10, reach=0.28)
    marks += ndimage.gaussian_filter(vessels, sigma=0.0015 * w + 0.3) * lung
    density += 0.25 * _ellipse(u, v, lung_front + 0.08, b.dome_l + 0.05, 0.035, 0.022, 3 * e) * -1.0

    mark_w = 0.06
    for f in spec.findings:
        if f.kind == "pleural_effusion":
            rise = {"small": 0.05, "moderate": 0.13, "large": 0.24}[f.size or "small"]
            amp = 1.0 if f.side == "bilateral" else 0.65
            base = np.maximum(dome1, dome2) + 0.01
            ramp = np.clip((u - 0.3) / 0.5, 0.0, 1.0)  # fluid layers posteriorly first
            fluid = _step(v - (base - rise * (0.25 + 0.75 * ramp)), 3 * e) * _step(0.8 - u, 2 * e) * lung
            density += amp * (0.4 * fluid + 0.6 * fluid * air)
            air = air * (1.0 - amp * fluid)
        elif f.kind == "pneumothorax":
            depth = {"small": 0.03, "moderate": 0.05, "large": 0.08}[f.size or "small"]
            inner = _step(v - (apex_v + depth), e)
            ptx = lung * (1.0 - inner) * _step(b.apex + 0.3 - v, 0.03)
            marks = marks * (1.0 - ptx)
            air = air + 0.08 * ptx
            density += 0.2 * 4.0 * inner * (1.0 - inner) * lung * _step(b.apex + 0.3 - v, 0.03)
        elif f.kind == "nodule":
            cv = {"upper": 0.2, "mid": 0.36, "lower": 0.5}[f.zone or "mid"] + b.apex * 0.5
            cu = find_rng.uniform(0.4, 0.7)
            r = (f.size_mm or 10.0) / 2.0 / 400.0
            density += 0.45 * _ellipse(u, v, cu, cv + find_rng.uniform(-0.02, 0.02), r, r, 2 * e)
        elif f.kind == "consolidation":
            lobe = f.zone or ""
            if "upper" in lobe:
                cu, cv = 0.45, b.apex + 0.16
            elif "middle" in lobe or "lingula" in lobe:
                cu, cv = 0.33, 0.5
            else:
                cu, cv = 0.68, 0.57
            opac = _patch(u, v, cu, cv, 0.1, 0.08, find_rng) * lung
            density += 0.4 * opac
            marks = marks * (1.0 - np.clip(opac, 0, 1))
        elif f.kind == "atelectasis":
            band = np.zeros((h, w), np.float32)
            if f.zone == "upper":
                pts = _curve([(0.35, b.apex + 0.2), (0.55, b.apex + 0.18), (0.72, b.apex + 0.14)])
            else:
                pts = _curve([(0.35, b.dome_r - 0.12), (0.55, b.dome_r - 0.08), (0.74, b.dome_r - 0.03)])
            _polyline(band, pts, 0.018, 1.0)
            amp = 0.45 if f.side == "bilateral" else 0.32
            density += amp * ndimage.gaussian_filter(band, sigma=0.6) * lung
        elif f.kind == "edema":
            amp = 0.3 if f.size == "mild" else 0.5
            density += amp * _blob(u, v, hilum[0] - 0.03, hilum[1] + 0.04, 0.12, 0.13) * lung
            marks = ndimage.gaussian_filter(marks, sigma=0.006 * w)
            mark_w = 0.09
        elif f.kind == "support_devices":
            dev = np.zeros((h, w), np.float32)
            if "endotracheal_tube" in f.devices:
                _polyline(
                    dev, np.asarray([(0.485, 0.0), (0.52, b.apex + 0.1), (0.535, b.apex + 0.16)]), 0.006, 0.9
                )
            if "central_line" in f.devices:
                pts = _curve([(0.44, 0.0), (0.46, b.apex + 0.1), (0.47, b.apex + 0.28)])
                _polyline(dev, pts, 0.007, 0.8)
            if "pacemaker" in f.devices:
                dev += 1.6 * _ellipse(u, v, 0.2, b.apex + 0.12, 0.018, 0.035, 2 * e)
                pts = _curve(
                    [
                        (0.21, b.apex + 0.12),
                        (0.4, b.apex + 0.2),
                        (0.5, b.apex + 0.3),
                        (heart_cu, heart_cv + 0.05),
                    ]
                )
                _polyline(dev, pts, 0.006, 0.8)
            density += dev

    density = density - air + mark_w * marks
    return _finish(np.clip(density, 0.0, None), b, noise_rng)


# ---------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options: tuple[str, ...], **fmt: str) -> str:
    text = options[int(rng.integers(len(options)))]
    caps = {k[0].upper() + k[1:]: (str(x)[:1].upper() + str(x)[1:]) for k, x in fmt.items()}
    return text.format(**fmt, **caps)


def _fmt(f: Finding) -> dict[str, str]:
    out: dict[str, str] = {}
    if f.side:
        out["side"] = f.side
    if f.size:
        out["size"] = f.size
    if f.kind == "consolidation" and f.zone:
        out["lobe"] = f.zone
    elif f.zone:
        out["zone"] = f.zone
    if f.size_mm:
        out["cm"] = f"{f.size_mm / 10:.1f}"
    return out


def build_report(spec: FindingsSpec, rng: np.random.Generator) -> tuple[str, str]:
    """Assemble (FINDINGS, IMPRESSION) text consistent with `spec`, wording drawn from `rng`.

    Every key finding is either stated (with side and size) or explicitly negated.
    """
    g = spec.get
    sentences: list[str] = []
    devices = g("support_devices")
    if devices is not None:
        sentences += [_pick(rng, P.DEVICES[d]) for d in devices.devices]
    cm = g("cardiomegaly")
    sentences.append(_pick(rng, P.CARDIOMEGALY[cm.size or "mild"]) if cm else _pick(rng, P.HEART_NORMAL))
    sentences.append(_pick(rng, P.MEDIASTINUM_NORMAL))

    lung_kinds = ("consolidation", "nodule", "atelectasis", "edema")
    if not any(g(k) for k in lung_kinds):
        sentences.append(_pick(rng, P.LUNGS_CLEAR))
    else:
        for k in lung_kinds:
            f = g(k)
            if f is None:
                continue
            if k == "consolidation":
                sentences.append(_pick(rng, P.CONSOLIDATION, **_fmt(f)))
            elif k == "nodule":
                table = P.MASS if (f.size_mm or 0) >= 30 else P.NODULE
                sentences.append(_pick(rng, table, **_fmt(f)))
            elif k == "atelectasis":
                if f.side == "bilateral":
                    sentences.append(_pick(rng, P.ATELECTASIS_BILATERAL))
                elif f.zone == "upper":
                    sentences.append(_pick(rng, P.ATELECTASIS_UPPER, **_fmt(f)))
                else:
                    sentences.append(_pick(rng, P.ATELECTASIS, **_fmt(f)))
            else:
                sentences.append(_pick(rng, P.EDEMA[f.size or "mild"]))
        if g("consolidation") is None:
            sentences.append(_pick(rng, P.NO_CONSOLIDATION))
        if g("edema") is None:
            sentences.append(_pick(rng, P.NO_EDEMA))

    eff, ptx = g("pleural_effusion"), g("pneumothorax")
    if eff is None and ptx is None:
        sentences.append(_pick(rng, P.NO_EFFUSION_NO_PNEUMOTHORAX))
    if eff is not None:
        table = P.EFFUSION_BILATERAL if eff.side == "bilateral" else P.EFFUSION
        sentences.append(_pick(rng, table, **_fmt(eff)))
        if ptx is None:
            sentences.append(_pick(rng, P.NO_PNEUMOTHORAX))
    if ptx is not None:
        sentences.append(_pick(rng, P.PNEUMOTHORAX, **_fmt(ptx)))
        if eff is None:
            sentences.append(_pick(rng, P.NO_EFFUSION))
    sentences.append(_pick(rng, P.BONES_NORMAL))

    # IMPRESSION: most urgent first; devices last; normal studies get the standard line.
    order = (
        "pneumothorax",
        "pleural_effusion",
        "consolidation",
        "edema",
        "cardiomegaly",
        "nodule",
        "atelectasis",
    )
    items: list[str] = []
    for k in order:
        f = g(k)
        if f is None:
            continue
        key = k
        if k == "pleural_effusion" and f.side == "bilateral":
            key = "pleural_effusion_bilateral"
        elif k == "nodule" and (f.size_mm or 0) >= 30:
            key = "mass"
        elif k == "atelectasis" and f.side == "bilateral":
            key = "atelectasis_bilateral"
        elif k == "atelectasis" and f.zone == "upper":
            key = "atelectasis_upper"
        items.append(_pick(rng, P.IMPRESSION[key], **_fmt(f)))
    if not items:
        items.append(_pick(rng, P.IMPRESSION_NORMAL))
    if devices is not None:
        items.append(_pick(rng, P.IMPRESSION["support_devices"]))
    impression = items[0] if len(items) == 1 else " ".join(f"{i}. {t}" for i, t in enumerate(items, 1))
    return " ".join(sentences), impression


# ---------------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------------

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"

DEFAULT_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless (pydicom native encoder)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless (pyjpegls)
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless (pylibjpeg-openjpeg)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
)


def available_transfer_syntaxes(wanted: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES) -> tuple[str, ...]:
    """The subset of `wanted` this environment can write (compressed ones need an encoder plugin)."""
    from pydicom.pixels.encoders.base import get_encoder
    from pydicom.uid import UID

    out = []
    for ts in wanted:
        uid = UID(ts)
        if not uid.is_compressed:
            out.append(ts)
            continue
        try:
            if get_encoder(uid).is_available:
                out.append(ts)
        except (NotImplementedError, ValueError):
            continue
    return tuple(out)


def to_stored(image: np.ndarray, bits_stored: int, photometric: str) -> np.ndarray:
    """Display image in [0, 1] (bright = dense) -> unsigned stored values.

    MONOCHROME2 stores bright as high values; MONOCHROME1 stores the inverse (max - value), so both
    display the same image.

    Args:
        image: float array (H, W) in [0, 1].
        bits_stored: 8..16.
        photometric: "MONOCHROME1" or "MONOCHROME2".

    Returns:
        uint16 array (H, W) in [0, 2**bits_stored - 1].
    """
    if not 8 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be in 8..16, got {bits_stored}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    top = (1 << bits_stored) - 1
    stored = np.rint(np.clip(image, 0.0, 1.0) * top).astype(np.uint16)
    return (top - stored).astype(np.uint16) if photometric == "MONOCHROME1" else stored


@dataclass(frozen=True)
class _SeriesInfo:
    view: str  # PA, AP or LL
    series_number: int
    series_uid: str
    sop_uid: str
    path: Path


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    # Default pydicom root + SHA-512 of the parts: deterministic (prefix=None would be random).
    return str(generate_uid(entropy_srcs=["medvlm-phantom", *map(str, parts)]))


def _write_image(
    path: Path,
    image: np.ndarray,
    *,
    common: dict[str, Any],
    series: _SeriesInfo,
    modality: str,
    ts: str,
    photometric: str,
    bits_stored: int,
    rescale: tuple[float, float] | None,
    pixel_spacing_mm: float,
) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    sop_class = CR_IMAGE_STORAGE if modality == "CR" else DX_PRESENTATION_STORAGE
    stored = to_stored(image, bits_stored, photometric)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = series.sop_uid
    ts_uid = UID(ts)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if ts_uid.is_compressed else ts_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = series.sop_uid
    for key, value in common.items():
        setattr(ds, key, value)
    ds.Modality = modality
    ds.SeriesInstanceUID = series.series_uid
    ds.SeriesNumber = series.series_number
    ds.SeriesDescription = "CHEST LATERAL" if series.view == "LL" else f"CHEST {series.view}"
    ds.SeriesDate = ds.ContentDate = ds.StudyDate
    ds.SeriesTime = ds.ContentTime = ds.StudyTime
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = series.view
    ds.PatientOrientation = (
        ["A", "F"] if series.view == "LL" else (["L", "F"] if series.view == "PA" else ["R", "F"])
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImageComments = "Synthetic phantom, not patient data."
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [f"{pixel_spacing_mm:.4f}", f"{pixel_spacing_mm:.4f}"]
    ds.ImagerPixelSpacing = ds.PixelSpacing
    ds.BurnedInAnnotation = "NO"
    slope, intercept = rescale if rescale is not None else (1.0, 0.0)
    if rescale is not None or modality == "DX":
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleType = "US"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        # +1: lower values = less beam (denser). MONOCHROME2 stores dense as HIGH, hence -1.
        ds.PixelIntensityRelationshipSign = -1 if photometric == "MONOCHROME2" else 1
        ds.DetectorType = "SCINTILLATOR"
    lo, hi = np.percentile(stored, [0.5, 99.5])
    lo, hi = slope * float(lo) + intercept, slope * float(hi) + intercept
    ds.WindowCenter = f"{(lo + hi) / 2:.1f}"
    ds.WindowWidth = f"{max(hi - lo, 1.0):.1f}"
    ds.VOILUTFunction = "LINEAR"
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    if ts_uid.is_compressed:
        ds.compress(ts_uid, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# ---------------------------------------------------------------------------------------------------
# Studies
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomConfig:
    """How phantom studies are drawn, rendered and written."""

    size: int = 512
    """Image rows = columns. 512 keeps 100 studies well under a minute on one core."""
    field_of_view_mm: float = 400.0
    """Physical width of the image; PixelSpacing = field_of_view_mm / size."""
    p_count: tuple[float, float, float] = (0.3, 0.5, 0.2)
    """Probability of 0, 1 and 2 findings per study (mostly 0-1, as in real worklists)."""
    transfer_syntaxes: tuple[str, ...] = DEFAULT_TRANSFER_SYNTAXES
    """Cycled over studies; those without an installed encoder are skipped."""
    split_fractions: tuple[float, float] = (0.8, 0.1)
    """Train and val fractions; the rest is test. Assigned from a hash of (seed, index)."""
    base_date: date = date(2021, 1, 4)
    """Study dates are this plus a drawn number of days (fixed, so output is reproducible)."""

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ValueError(f"PhantomConfig.size must be >= 32, got {self.size}")
        if len(self.p_count) != 3 or min(self.p_count) < 0 or sum(self.p_count) <= 0:
            raise ValueError(f"PhantomConfig.p_count must be three non-negative weights, got {self.p_count}")
        if not self.transfer_syntaxes:
            raise ValueError("PhantomConfig.transfer_syntaxes must not be empty")
        if sum(self.split_fractions) > 1.0 or min(self.split_fractions) < 0:
            raise ValueError(
                f"PhantomConfig.split_fractions must be >= 0 and sum <= 1, got {self.split_fractions}"
            )


@dataclass(frozen=True)
class PhantomStudy:
    """One generated study: its spec, report and where its files went."""

    index: int
    study_id: str
    study_uid: str
    spec: FindingsSpec
    findings: str
    impression: str
    indication: str
    split: str
    views: tuple[dict[str, str], ...]
    transfer_syntax: str

    def record(self) -> dict[str, Any]:
        """The reports.jsonl line."""
        return {
            "study_uid": self.study_uid,
            "study_id": self.study_id,
            "indication": self.indication,
            "findings": self.findings,
            "impression": self.impression,
            "labels": self.spec.labels(),
            "spec": self.spec.as_dict(),
            "views": list(self.views),
            "split": self.split,
            "transfer_syntax": self.transfer_syntax,
        }


@dataclass(frozen=True)
class PhantomSummary:
    """What `generate_phantoms` wrote."""

    out: Path
    studies: int
    images: int
    findings: dict[str, int] = field(default_factory=dict)
    transfer_syntaxes: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "studies": self.studies,
            "images": self.images,
            "findings": dict(self.findings),
            "transfer_syntaxes": dict(self.transfer_syntaxes),
            "splits": dict(self.splits),
        }


def _split(seed: int, index: int, fractions: tuple[float, float]) -> str:
    digest = hashlib.sha256(f"medvlm-phantom-split:{seed}:{index}".encode()).digest()
    x = int.from_bytes(digest[:8], "big") / 2.0**64
    if x < fractions[0]:
        return "train"
    return "val" if x < fractions[0] + fractions[1] else "test"


def make_study(out: Path, index: int, seed: int, config: PhantomConfig, transfer_syntax: str) -> PhantomStudy:
    """Draw, render and write study `index` of the set `seed` (independent of other studies).

    Args:
        out: output root; files go to `out/<study_id>/<series>_<view>/1.dcm`.
        index: study index (0-based).
        seed: set seed.
        config: generation settings.
        transfer_syntax: UID used for both views.

    Returns:
        The study with its report and relative file paths.
    """
    spec_rng, front_rng, lat_rng, text_rng, meta_rng = np.random.default_rng([seed, index]).spawn(5)
    spec = sample_spec(spec_rng, config.p_count)
    findings, impression = build_report(spec, text_rng)
    indication = P.INDICATIONS[int(text_rng.integers(len(P.INDICATIONS)))]

    width = max(4, len(str(index)))
    num = f"{index:0{width}d}"
    study_id = f"PH{num}"
    study_uid = _uid(seed, index, "study")
    devices = spec.get("support_devices")
    # Intubated / lined patients are imaged supine at the bedside: AP.
    frontal_view = (
        "AP" if (devices and "endotracheal_tube" in devices.devices) or meta_rng.random() < 0.15 else "PA"
    )
    modality = "CR" if meta_rng.random() < 0.5 else "DX"
    photometric = "MONOCHROME1" if (index // 2) % 2 == 1 else "MONOCHROME2"
    bits_stored = int(meta_rng.choice([12, 14, 16]))
    rescale = None
    if meta_rng.random() < 0.4:
        rescale = (float(meta_rng.choice([0.5, 1.0, 2.0])), float(meta_rng.choice([-1024.0, 0.0, 100.0])))
    study_date = config.base_date + timedelta(days=int(meta_rng.integers(0, 1500)))
    secs = int(meta_rng.integers(7 * 3600, 19 * 3600))
    common = {
        "PatientName": f"PHANTOM^{num}",
        "PatientID": study_id,
        "PatientBirthDate": "",
        "PatientSex": str(meta_rng.choice(["M", "F", "O"])),
        "PatientAge": f"{int(meta_rng.integers(25, 90)):03d}Y",
        "StudyInstanceUID": study_uid,
        "StudyID": study_id,
        "AccessionNumber": f"PHA{seed % 10000:04d}{num}"[:16],
        "StudyDate": study_date.strftime("%Y%m%d"),
        "StudyTime": f"{secs // 3600:02d}{secs % 3600 // 60:02d}{secs % 60:02d}",
        "StudyDescription": "XR CHEST 2 VIEWS (PHANTOM)",
        "ReferringPhysicianName": "",
        "Manufacturer": "medvlm phantom",
        "InstitutionName": "Synthetic",
    }
    spacing = config.field_of_view_mm / config.size
    views = []
    for number, view, render, rng in (
        (1, frontal_view, render_frontal, front_rng),
        (2, "LL", render_lateral, lat_rng),
    ):
        rel = Path(study_id) / f"{number}_{view}" / "1.dcm"
        info = _SeriesInfo(
            view, number, _uid(seed, index, "series", number), _uid(seed, index, "sop", number), rel
        )
        image = render(spec, config.size, rng)
        _write_image(
            out / rel,
            image,
            common=common,
            series=info,
            modality=modality,
            ts=transfer_syntax,
            photometric=photometric,
            bits_stored=bits_stored,
            rescale=rescale,
            pixel_spacing_mm=spacing,
        )
        views.append(
            {"path": rel.as_posix(), "view": view, "series_uid": info.series_uid, "sop_uid": info.sop_uid}
        )
    return PhantomStudy(
        index=index,
        study_id=study_id,
        study_uid=study_uid,
        spec=spec,
        findings=findings,
        impression=impression,
        indication=indication,
        split=_split(seed, index, config.split_fractions),
        views=tuple(views),
        transfer_syntax=transfer_syntax,
    )


def generate_phantoms(
    out: Path, *, n: int, seed: int, progress: bool = True, config: PhantomConfig | None = None
) -> PhantomSummary:
    """Write `n` phantom studies (frontal + lateral DICOM each) and `out/reports.jsonl`.

    The same (n, seed, config) gives byte-identical files.

    Args:
        out: output folder (created; existing phantom files are overwritten).
        n: number of studies (>= 1).
        seed: set seed.
        progress: show a progress bar on stderr.
        config: generation settings; defaults to `PhantomConfig()`.

    Returns:
        Counts of studies, images, findings, transfer syntaxes and splits.

    Raises:
        ValueError: n < 1 or no requested transfer syntax can be written here.
        NotADirectoryError: `out` exists and is not a folder.
    """
    from pydicom.uid import UID

    config = config or PhantomConfig()
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is not a folder: {out}")
    syntaxes = available_transfer_syntaxes(config.transfer_syntaxes)
    if not syntaxes:
        raise ValueError("none of PhantomConfig.transfer_syntaxes has an encoder installed here")
    out.mkdir(parents=True, exist_ok=True)

    indices: Any = range(n)
    if progress:
        from rich.console import Console
        from rich.progress import track

        indices = track(indices, description="phantoms", total=n, console=Console(stderr=True))
    findings: Counter[str] = Counter()
    tsyntaxes: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    images = 0
    with open(out / "reports.jsonl", "w", encoding="utf-8") as fh:
        for i in indices:
            ts = syntaxes[i % len(syntaxes)]
            study = make_study(out, i, seed, config, ts)
            fh.write(json.dumps(study.record(), sort_keys=False) + "\n")
            findings.update(study.spec.kinds or ("no_finding",))
            tsyntaxes[UID(ts).name] += len(study.views)
            splits[study.split] += 1
            images += len(study.views)
    return PhantomSummary(
        out=out,
        studies=n,
        images=images,
        findings=dict(sorted(findings.items())),
        transfer_syntaxes=dict(tsyntaxes),
        splits=dict(sorted(splits.items())),
    )


__all__ = [
    "CHEXPERT_OBSERVATIONS",
    "DEVICES",
    "KINDS",
    "LOBES",
    "ZONES",
    "Finding",
    "FindingsSpec",
    "PhantomConfig",
    "PhantomStudy",
    "PhantomSummary",
    "available_transfer_syntaxes",
    "build_report",
    "generate_phantoms",
    "make_study",
    "render_frontal",
    "render_lateral",
    "sample_finding",
    "sample_spec",
    "to_stored",
]
