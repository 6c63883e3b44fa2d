"""Left lateral chest radiograph phantom: the normal chest first, then each finding drawn in.

The patient faces the image's left: anterior = small u, spine = large u. Both lungs superimpose,
so a unilateral finding shows fainter than in the frontal view and carries no side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipelines.phantoms.body import Body, render_view
from pipelines.phantoms.canvas import blob, curve, ellipse, grid, patch, polyline, step, vessels
from pipelines.phantoms.spec import Finding, FindingsSpec


@dataclass
class _Chest:
    """A lateral view being drawn: the layers findings edit and the anatomy that places them."""

    body: Body
    u: np.ndarray  # (H, W) normalised column
    v: np.ndarray  # (H, W) normalised row
    e: float  # edge softness: about a pixel
    dome1: np.ndarray  # (H, W) right hemidiaphragm row per column
    dome2: np.ndarray  # (H, W) left hemidiaphragm row per column
    apex_v: np.ndarray  # (H, W) lung apex row per column
    lung: np.ndarray  # aerated lung mask
    hilum: tuple[float, float]  # (u, v)
    heart_cu: float  # heart centre (u, v)
    heart_cv: float
    density: np.ndarray  # everything that attenuates
    air: np.ndarray  # lung air, subtracted from density at the end
    marks: np.ndarray  # vessel and airway markings
    mark_w: float = 0.06  # weight of the markings


def _dome_at(x: np.ndarray | float, base: float) -> np.ndarray | float:
    # Posterior costophrenic sulcus is the deepest point of each hemidiaphragm.
    return base + np.where(np.asarray(x) > 0.42, 1.1, 0.7) * (np.asarray(x) - 0.42) ** 2


def _anatomy(b: Body, h: int, w: int, mark_rng: np.random.Generator) -> _Chest:
    """Draw the normal lateral chest of `b` at (h, w)."""
    from scipy import ndimage

    u, v = grid(h, w)
    e = 1.2 / w

    ant = 0.14 + 0.05 * np.clip((0.35 - v) / 0.35, 0, 1) ** 2  # anterior chest wall
    post = 0.9 - 0.04 * np.clip((0.2 - v) / 0.2, 0, 1)
    mid, half = (ant + post) / 2.0, (post - ant) / 2.0
    thick = np.sqrt(np.clip(1.0 - ((u - mid) / half) ** 2, 0.0, 1.0))
    inside = step(half - np.abs(u - mid), 2 * e)
    density = 1.25 * b.tissue * (0.4 + 0.6 * thick) * inside
    density += 0.35 * step(0.2 - v, 0.05) * inside  # shoulders and arms superimposed

    dome1, dome2 = _dome_at(u, b.dome_r), _dome_at(u, b.dome_l)
    top = np.clip((0.32 - v) / 0.25, 0.0, 1.0) ** 2  # lungs narrow towards the apex
    lung_front = ant + 0.045 + 0.12 * top
    heart_ru = 0.16 * (b.ctr / 0.45) ** 0.9
    heart_cu, heart_cv = 0.14 + 0.045 + heart_ru * 0.85, b.dome_l - 0.07
    heart = ellipse(u, v, heart_cu, heart_cv, heart_ru, 0.13, 2 * e)
    apex_v = b.apex + 0.01 + 1.0 * (u - 0.55) ** 2
    lung = (
        ellipse(u, v, 0.5, b.apex + 0.42, 0.31, 0.43, 2 * e)
        * step(u - lung_front, 2 * e)
        * step(0.79 - 0.07 * top - u, 2 * e)
        * step(v - apex_v, 2 * e)
        * step(np.maximum(dome1, dome2) - v, 2 * e)
        * (1.0 - heart)
    )
    lung_depth = ndimage.gaussian_filter(lung, sigma=0.015 * w) * lung
    air = 1.15 * b.air * lung_depth
    # The lower of the two domes still holds some air above the upper one: a second faint contour.
    density += 0.12 * step(v - np.minimum(dome1, dome2), 2 * e) * lung
    density += 0.2 * step(v - np.maximum(dome1, dome2), 2 * e) * inside
    density += 0.12 * heart

    # Spine (vertebral bodies with disc spaces), posterior elements, sternum, trachea, hilum.
    verteb = step(0.018 - np.abs(((v - 0.01) % 0.06) - 0.03) + 0.012, e)
    density += 0.35 * step(0.04 - np.abs(u - 0.84), 2 * e) * verteb * step(v - 0.04, e)
    density += 0.12 * step(u - 0.885, 2 * e) * inside
    density += 0.3 * step(0.014 - np.abs(u - (ant + 0.02)), e) * step(v - 0.15, e) * step(0.58 - v, e)
    marks = np.zeros((h, w), np.float32)
    polyline(marks, np.asarray([(0.49, 0.0), (0.53, b.apex + 0.12), (0.56, b.apex + 0.26)]), 0.03, -1.0)
    hilum = (0.56, b.apex + 0.32)
    density += 0.22 * blob(u, v, *hilum, 0.04, 0.045)
    arch = curve([(0.45, b.apex + 0.2), (0.53, b.apex + 0.12), (0.62, b.apex + 0.18), (0.66, b.apex + 0.32)])
    polyline(marks, arch, 0.04, 0.6)
    vessel_layer = np.zeros((h, w), np.float32)
    vessels(vessel_layer, mark_rng, [hilum, (hilum[0] + 0.001, hilum[1])], n=10, reach=0.28)
    marks += ndimage.gaussian_filter(vessel_layer, sigma=0.0015 * w + 0.3) * lung
    density += 0.25 * ellipse(u, v, lung_front + 0.08, b.dome_l + 0.05, 0.035, 0.022, 3 * e) * -1.0
    return _Chest(b, u, v, e, dome1, dome2, apex_v, lung, hilum, heart_cu, heart_cv, density, air, marks)


# --- findings: each edits the chest's layers in place ------------------------------------------------


def _effusion(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    u, v, e = c.u, c.v, c.e
    rise = {"small": 0.05, "moderate": 0.13, "large": 0.24}[f.size or "small"]
    amp = 1.0 if f.side == "bilateral" else 0.65
    base = np.maximum(c.dome1, c.dome2) + 0.01
    ramp = np.clip((u - 0.3) / 0.5, 0.0, 1.0)  # fluid layers posteriorly first
    fluid = step(v - (base - rise * (0.25 + 0.75 * ramp)), 3 * e) * step(0.8 - u, 2 * e) * c.lung
    c.density += amp * (0.4 * fluid + 0.6 * fluid * c.air)
    c.air = c.air * (1.0 - amp * fluid)


def _pneumothorax(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    b, v, e, lung = c.body, c.v, c.e, c.lung
    depth = {"small": 0.03, "moderate": 0.05, "large": 0.08}[f.size or "small"]
    inner = step(v - (c.apex_v + depth), e)
    ptx = lung * (1.0 - inner) * step(b.apex + 0.3 - v, 0.03)
    c.marks = c.marks * (1.0 - ptx)
    c.air = c.air + 0.08 * ptx
    c.density += 0.2 * 4.0 * inner * (1.0 - inner) * lung * step(b.apex + 0.3 - v, 0.03)


def _nodule(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    cv = {"upper": 0.2, "mid": 0.36, "lower": 0.5}[f.zone or "mid"] + c.body.apex * 0.5
    cu = rng.uniform(0.4, 0.7)
    r = (f.size_mm or 10.0) / 2.0 / 400.0
    c.density += 0.45 * ellipse(c.u, c.v, cu, cv + rng.uniform(-0.02, 0.02), r, r, 2 * c.e)


def _consolidation(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    lobe = f.zone or ""
    if "upper" in lobe:
        cu, cv = 0.45, c.body.apex + 0.16
    elif "middle" in lobe or "lingula" in lobe:
        cu, cv = 0.33, 0.5
    else:
        cu, cv = 0.68, 0.57
    opac = patch(c.u, c.v, cu, cv, 0.1, 0.08, rng) * c.lung
    c.density += 0.4 * opac
    c.marks = c.marks * (1.0 - np.clip(opac, 0, 1))


def _atelectasis(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    from scipy import ndimage

    b = c.body
    band = np.zeros(c.u.shape, np.float32)
    if f.zone == "upper":
        pts = curve([(0.35, b.apex + 0.2), (0.55, b.apex + 0.18), (0.72, b.apex + 0.14)])
    else:
        pts = curve([(0.35, b.dome_r - 0.12), (0.55, b.dome_r - 0.08), (0.74, b.dome_r - 0.03)])
    polyline(band, pts, 0.018, 1.0)
    amp = 0.45 if f.side == "bilateral" else 0.32
    c.density += amp * ndimage.gaussian_filter(band, sigma=0.6) * c.lung


def _edema(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    from scipy import ndimage

    hilum = c.hilum
    amp = 0.3 if f.size == "mild" else 0.5
    c.density += amp * blob(c.u, c.v, hilum[0] - 0.03, hilum[1] + 0.04, 0.12, 0.13) * c.lung
    c.marks = ndimage.gaussian_filter(c.marks, sigma=0.006 * c.u.shape[1])  # indistinct vessels
    c.mark_w = 0.09


def _devices(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    b = c.body
    dev = np.zeros(c.u.shape, np.float32)
    if "endotracheal_tube" in f.devices:
        polyline(dev, np.asarray([(0.485, 0.0), (0.52, b.apex + 0.1), (0.535, b.apex + 0.16)]), 0.006, 0.9)
    if "central_line" in f.devices:
        pts = curve([(0.44, 0.0), (0.46, b.apex + 0.1), (0.47, b.apex + 0.28)])
        polyline(dev, pts, 0.007, 0.8)
    if "pacemaker" in f.devices:
        dev += 1.6 * ellipse(c.u, c.v, 0.2, b.apex + 0.12, 0.018, 0.035, 2 * c.e)
        pts = curve(
            [
                (0.21, b.apex + 0.12),
                (0.4, b.apex + 0.2),
                (0.5, b.apex + 0.3),
                (c.heart_cu, c.heart_cv + 0.05),
            ]
        )
        polyline(dev, pts, 0.006, 0.8)
    c.density += dev


_DRAW: dict[str, Callable[[_Chest, Finding, np.random.Generator], None]] = {
    "pleural_effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "nodule": _nodule,
    "consolidation": _consolidation,
    "atelectasis": _atelectasis,
    "edema": _edema,
    "support_devices": _devices,
}
"""How each finding kind is drawn; cardiomegaly is in the body (its cardiothoracic ratio)."""


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

    Raises:
        PhantomError: `size` is under 32 pixels.
    """
    return render_view(spec, size, rng, _anatomy, _DRAW)
