"""Frontal (PA / AP) chest radiograph phantom: the normal chest first, then each finding drawn in.

Radiographic convention: the patient's LEFT is on the image's RIGHT (u > 0.5). The anatomy is a
density map (soft tissue, heart, bones) minus lung air plus vessel markings; each finding edits
those three layers where it lies, so it shows on the stated side and in the stated zone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipelines.phantoms.body import Body, render_view
from pipelines.phantoms.canvas import (
    blob,
    curve,
    ellipse,
    grid,
    patch,
    polyline,
    side_mask,
    sides,
    step,
    u_of,
    vessels,
)
from pipelines.phantoms.spec import Finding, FindingsSpec


@dataclass
class _Chest:
    """A frontal view being drawn: the layers findings edit and the anatomy that places them."""

    body: Body
    u: np.ndarray  # (H, W) normalised column
    v: np.ndarray  # (H, W) normalised row
    e: float  # edge softness: about a pixel
    s: np.ndarray  # (H, W) lateral distance from the midline
    s_lat: np.ndarray  # (H, W) inner chest wall's distance from the midline, per row
    thorax: np.ndarray  # hemithorax mask: where pleural fluid can lie
    lung: np.ndarray  # aerated lung mask
    hila: list[tuple[float, float]]  # right, left hilum (u, v)
    heart_cv: float  # row of the heart's centre
    density: np.ndarray  # everything that attenuates
    air: np.ndarray  # lung air, subtracted from density at the end
    marks: np.ndarray  # vessel and airway markings
    mark_w: float = 0.06  # weight of the markings


def _anatomy(b: Body, h: int, w: int, mark_rng: np.random.Generator) -> _Chest:
    """Draw the normal frontal chest of `b` at (h, w)."""
    from scipy import ndimage

    u, v = grid(h, w)
    e = 1.2 / w  # edge softness: about a pixel
    s = np.abs(u - 0.5)  # lateral distance from the midline
    right = u < 0.5  # patient right
    dome = np.where(right, b.dome_r, b.dome_l)

    # Body outline: neck widening into shoulders, soft tissue thicker in the middle.
    half = 0.13 + 0.33 * np.clip(v / 0.14, 0, 1) ** 0.6 - 0.03 * v
    thick = np.sqrt(np.clip(1.0 - (s / half) ** 2, 0.0, 1.0))
    density = b.tissue * (0.35 + 0.65 * thick) * step(half - s, 2 * e)
    below = step(v - dome - 0.14 * ((s - 0.17) / (b.lung_w - 0.17)) ** 2, 2 * e)
    density += 0.08 * below * step(half - s, 2 * e)  # abdomen under the domes

    # Lungs: chest wall laterally, apex, diaphragm domes (costophrenic angles laterally), mediastinum.
    s_lat = b.lung_w * (0.2 + 0.8 * np.sqrt(np.clip((v - b.apex) / 0.6, 0, 1)))
    dome_curve = dome + 0.14 * ((s - 0.17) / (b.lung_w - 0.17)) ** 2
    heart_w = b.ctr * 2.0 * b.lung_w
    # Heart: right border (right atrium) a third of its width right of the midline, the left
    # ventricle bulging down and to the patient's left; total width = ctr * inner thoracic width.
    heart_r, heart_l = 0.5 - 0.3 * heart_w, 0.5 + 0.7 * heart_w
    heart_cu, heart_cv = (heart_r + 0.02 + heart_l) / 2.0, b.dome_l - 0.085
    lv = ellipse(u, v, heart_cu, heart_cv, (heart_l - heart_r - 0.02) / 2.0, 0.12, 2 * e, angle=0.35)
    ra = ellipse(u, v, heart_r + 0.055, heart_cv + 0.01, 0.055, 0.085, 2 * e)
    heart = np.maximum(lv, ra)
    heart = np.maximum(
        heart,
        step(heart_cv - v, 2 * e)
        * step(v - b.apex - 0.2, 2 * e)
        * (1.0 - step(np.abs(u - 0.5 - 0.02) - 0.06, 2 * e)),
    )
    knob = ellipse(u, v, 0.555, b.apex + 0.2, 0.035, 0.03, 2 * e)
    # Hemithorax: where pleural fluid can lie (lung plus the space over the dome and behind the heart).
    thorax = step(s_lat - s, 2 * e) * step(v - b.apex, 2 * e) * step(dome_curve + 0.01 - v, 2 * e)
    thorax = thorax * step(s - 0.055, 2 * e)
    lung = thorax * step(dome_curve - v, 2 * e) * (1.0 - heart) * (1.0 - knob)
    density += 0.12 * heart
    # Lungs are thickest in their middle: a blurred mask gives rounded lucency towards the edges.
    lung_depth = ndimage.gaussian_filter(lung, sigma=0.012 * w) * lung
    air = b.air * lung_depth
    hila = [(0.5 - 0.11, b.apex + 0.33), (0.5 + 0.105, b.apex + 0.31)]
    density += 0.15 * (blob(u, v, *hila[0], 0.025, 0.035) + blob(u, v, *hila[1], 0.025, 0.035))

    # Vessel markings (visible only in aerated lung).
    marks = np.zeros((h, w), np.float32)
    vessels(marks, mark_rng, hila, n=14, reach=0.3)
    marks = ndimage.gaussian_filter(marks, sigma=0.0015 * w + 0.3) * lung

    # Spine, trachea and main bronchi, ribs, clavicles, humeral heads, gastric bubble.
    verteb = 0.93 + 0.07 * np.cos(2 * np.pi * v / 0.055)
    density += 0.2 * step(0.035 - np.abs(u - 0.5), 2 * e) * verteb * step(v - 0.02, e)
    density -= 0.22 * step(0.014 - np.abs(u - 0.5), e) * step(b.apex + 0.22 - v, 2 * e)
    carina = (0.5, b.apex + 0.22)
    polyline(marks, np.asarray([carina, (0.43, b.apex + 0.29)]), 0.022, -1.2)
    polyline(marks, np.asarray([carina, (0.575, b.apex + 0.28)]), 0.02, -1.2)
    ribs = np.zeros((h, w), np.float32)
    for i in range(10):
        v0 = b.apex + 0.04 + i * 0.062
        rib_v = v0 + 1.1 * (s - 0.12) ** 2 - 0.016
        band = step(0.011 + 0.01 * s - np.abs(v - rib_v), e)
        ribs += band * step(s_lat + 0.03 - s, 2 * e) * step(s - 0.04, 2 * e)
    for i in range(6):  # anterior ribs: fainter, sloping down towards the midline
        v0 = b.apex + 0.12 + i * 0.07
        rib_v = v0 + 0.35 * (b.lung_w - s) - 0.04 * ((b.lung_w - s) / b.lung_w) ** 2
        band = step(0.008 - np.abs(v - rib_v), e)
        ribs += 0.45 * band * step(s_lat + 0.02 - s, 2 * e) * step(s - 0.09, 2 * e)
    density += 0.08 * ribs
    clav_v = b.apex + 0.06 - 0.2 * (s - 0.04) + 0.55 * (s - 0.16) ** 2
    density += 0.3 * step(0.012 - np.abs(v - clav_v), e) * step(s - 0.035, 2 * e) * step(0.33 - s, 4 * e)
    for side in ("right", "left"):
        density += 0.35 * ellipse(u, v, u_of(side, 0.43), b.apex + 0.06, 0.05, 0.055, 2 * e)
    density -= 0.3 * ellipse(u, v, 0.5 + 0.15, b.dome_l + 0.05, 0.035, 0.022, 3 * e)
    return _Chest(b, u, v, e, s, s_lat, thorax, lung, hila, heart_cv, density, air, marks)


# --- findings: each edits the chest's layers in place ------------------------------------------------


def _effusion(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    b, s, e = c.body, c.s, c.e
    rise = {"small": 0.06, "moderate": 0.15, "large": 0.27}[f.size or "small"]
    for sd in sides(f.side or "right"):
        cp = (b.dome_r if sd == "right" else b.dome_l) + 0.14
        level = cp - rise - 0.05 * (s / b.lung_w)  # meniscus: higher along the lateral wall
        fluid = step(c.v - level, 3 * e) * c.thorax * side_mask(c.u, sd, e)
        c.density += fluid * (0.04 + 0.85 * c.air)
        c.air = c.air * (1.0 - fluid)
        c.marks = c.marks * (1.0 - fluid)


def _pneumothorax(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    b, s, e, lung = c.body, c.s, c.e, c.lung
    depth = {"small": 0.035, "moderate": 0.07, "large": 0.12}[f.size or "small"]
    side_m = side_mask(c.u, f.side or "right", e)
    inner = step((c.s_lat - depth) - s, e) * step(c.v - (b.apex + 1.3 * depth), e)
    upper = step(b.apex + 0.45 + depth - c.v, 0.04)
    ptx = lung * side_m * (1.0 - inner) * upper
    c.marks = c.marks * (1.0 - ptx)
    c.air = c.air + 0.12 * ptx
    pleural_line = 4.0 * inner * (1.0 - inner) * lung * side_m * upper
    c.density += 0.25 * pleural_line


def _nodule(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    b = c.body
    cv = {"upper": 0.2, "mid": 0.36, "lower": 0.5}[f.zone or "mid"] + b.apex * 0.5
    cv += rng.uniform(-0.02, 0.02)
    cu = u_of(f.side or "right", rng.uniform(0.15, b.lung_w - 0.1))
    r = (f.size_mm or 10.0) / 2.0 / 400.0  # field of view about 400 mm
    c.density += 0.6 * ellipse(c.u, c.v, cu, cv, r, r * rng.uniform(0.9, 1.1), 2 * c.e)


def _consolidation(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    b = c.body
    sd = f.side or "right"
    lobe = (f.zone or "").split()[-2] if " " in (f.zone or "") else (f.zone or "")
    if lobe == "upper":
        ls, lv, rs, rv = 0.2, b.apex + 0.17, 0.1, 0.09
    elif lobe in ("middle", "lingula"):
        ls, lv, rs, rv = 0.1 + (0.14 if sd == "left" else 0.04), 0.5, 0.08, 0.07
    else:
        ls, lv, rs, rv = 0.24, 0.55, 0.1, 0.075
    opac = patch(c.u, c.v, u_of(sd, ls), lv, rs, rv, rng) * c.lung * side_mask(c.u, sd, c.e)
    c.density += 0.55 * opac
    c.marks = c.marks * (1.0 - np.clip(opac, 0, 1))


def _atelectasis(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    from scipy import ndimage

    b = c.body
    for sd in sides(f.side or "right"):
        dv = b.dome_r if sd == "right" else b.dome_l
        if f.zone == "upper":
            p0, p1 = (0.1, b.apex + 0.2), (b.lung_w - 0.05, b.apex + 0.16)
        else:
            p0, p1 = (0.09, dv - 0.07), (b.lung_w - 0.05, dv - 0.03)
        band = np.zeros(c.u.shape, np.float32)
        pts = curve(
            [
                (u_of(sd, p0[0]), p0[1]),
                (u_of(sd, (p0[0] + p1[0]) / 2), p0[1] + 0.012),
                (u_of(sd, p1[0]), p1[1]),
            ]
        )
        polyline(band, pts, 0.022, 1.0)
        band = ndimage.gaussian_filter(band, sigma=0.6) * c.lung
        c.density += 0.5 * band


def _edema(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    from scipy import ndimage

    u, v, hila = c.u, c.v, c.hila
    amp = 0.3 if f.size == "mild" else 0.5
    haze = blob(u, v, hila[0][0] - 0.04, hila[0][1] + 0.05, 0.09, 0.12)
    haze += blob(u, v, hila[1][0] + 0.04, hila[1][1] + 0.05, 0.09, 0.12)
    c.density += amp * haze * c.lung
    c.marks = ndimage.gaussian_filter(c.marks, sigma=0.006 * u.shape[1])  # indistinct vessels
    c.mark_w = 0.09


def _devices(c: _Chest, f: Finding, rng: np.random.Generator) -> None:
    b, u, v, e = c.body, c.u, c.v, c.e
    dev = np.zeros(u.shape, np.float32)
    if "endotracheal_tube" in f.devices:
        tip = b.apex + 0.15
        polyline(dev, np.asarray([(0.5, 0.0), (0.501, tip)]), 0.022, 0.15)
        polyline(dev, np.asarray([(0.497, 0.0), (0.499, tip)]), 0.006, 0.9)
    if "central_line" in f.devices:
        pts = curve([(0.42, 0.0), (0.44, b.apex + 0.03), (0.465, b.apex + 0.14), (0.475, b.apex + 0.27)])
        polyline(dev, pts, 0.007, 0.9)
    if "pacemaker" in f.devices:
        box_u, box_v = 0.5 + 0.25, b.apex + 0.1
        dev += 1.6 * ellipse(u, v, box_u, box_v, 0.045, 0.032, 2 * e)
        for tip in ((0.455, c.heart_cv - 0.06), (0.5 + 0.1, c.heart_cv + 0.08)):
            pts = curve([(box_u - 0.04, box_v), (0.6, box_v + 0.02), (0.52, b.apex + 0.22), tip])
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

    Raises:
        PhantomError: `size` is under 32 pixels.
    """
    return render_view(spec, size, rng, _anatomy, _DRAW)
