"""Drawing primitives for the phantom renderers, in normalised image coordinates.

Every shape is placed by (u, v) = (column / W, row / H), both in [0, 1], so one anatomy
description renders at any image size. Shapes are soft (anti-aliased over about a pixel) and
return float32 masks in [0, 1] that the renderers weight and add into a density map.

Frontal convention: the patient's RIGHT is the image's LEFT (u < 0.5).
"""

from __future__ import annotations

import math

import numpy as np

from pipelines.phantoms.spec import PhantomError


def image_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """Image (rows, columns) from an int (square) or (H, W).

    Raises:
        PhantomError: a side is under 32 pixels (too small to draw the anatomy).
    """
    if isinstance(size, int):
        size = (size, size)
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise PhantomError(f"image size must be at least 32x32, got {h}x{w}")
    return h, w


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates (u, v), each float32 of shape (H, W)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    return (u + 0.5) / w, (v + 0.5) / h


def step(x: np.ndarray, width: float) -> np.ndarray:
    """Soft step 0 -> 1 across x = 0 over about `width` (same units as x)."""
    return (0.5 * (1.0 + np.tanh(x / width))).astype(np.float32)


def blob(u: np.ndarray, v: np.ndarray, cu: float, cv: float, su: float, sv: float) -> np.ndarray:
    """Gaussian bump centred at (cu, cv) with standard deviations (su, sv), peak 1."""
    return np.exp(-(((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2) / 2.0).astype(np.float32)


def ellipse(
    u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float, edge: float, angle: float = 0.0
) -> np.ndarray:
    """Soft filled ellipse, axes rotated by `angle` radians; `edge` is the blur width (normalised)."""
    du, dv = u - cu, v - cv
    if angle:
        c, s_ = math.cos(angle), math.sin(angle)
        du, dv = c * du + s_ * dv, -s_ * du + c * dv
    r = np.sqrt((du / ru) ** 2 + (dv / rv) ** 2)
    return step((1.0 - r) * min(ru, rv), edge)


def polyline(
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


def curve(points: list[tuple[float, float]], k: int = 24) -> np.ndarray:
    """A smooth curve through control points (quadratic B-spline-like corner cutting), shape (K, 2)."""
    pts = np.asarray(points, dtype=np.float64)
    for _ in range(3):  # Chaikin corner cutting, ends kept
        if len(pts) > k:
            break
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        pts = np.vstack([pts[:1], np.stack([q, r], axis=1).reshape(-1, 2), pts[-1:]])
    return pts


def side_mask(u: np.ndarray, side: str, edge: float) -> np.ndarray:
    """Patient side in a frontal image: patient RIGHT is the image's LEFT half; "bilateral" is all ones."""
    if side == "right":
        return step(0.5 - u, edge)
    if side == "left":
        return step(u - 0.5, edge)
    return np.ones_like(u)


def sides(side: str) -> tuple[str, ...]:
    """The single sides a finding's side covers ("bilateral" -> right and left)."""
    return ("right", "left") if side == "bilateral" else (side,)


def u_of(side: str, s: float) -> float:
    """Column of lateral distance `s` from the midline on the patient's `side` (frontal)."""
    return 0.5 - s if side == "right" else 0.5 + s


def vessels(
    canvas: np.ndarray, rng: np.random.Generator, hila: list[tuple[float, float]], n: int, reach: float
) -> None:
    """Draw branching, tapering vessel markings radiating from each hilum into `canvas` (in place).

    Args:
        canvas: float32 (H, W) layer of vessel markings.
        rng: the view's marking generator (the draw count depends only on `hila` and `n`).
        hila: (u, v) of each hilum; vessels run away from the midline.
        n: vessels per hilum.
        reach: longest vessel length (normalised).
    """
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
            polyline(canvas, np.asarray(pts), widths, 1.0, combine="max")
            if rng.random() < 0.7:  # one side branch
                j = int(rng.integers(1, k - 2))
                bu, bv = pts[j]
                b = ang + rng.choice([-0.6, 0.6])
                ends = [
                    (bu, bv),
                    (bu + outward * math.cos(b) * length * 0.35, bv + math.sin(b) * length * 0.3),
                ]
                polyline(canvas, np.asarray(ends), 0.004, 1.0, combine="max")


def patch(
    u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float, rng: np.random.Generator
) -> np.ndarray:
    """Patchy airspace opacity: a soft ellipse modulated by smoothed noise, values in [0, 1.2]."""
    from scipy import ndimage

    h, w = u.shape
    env = blob(u, v, cu, cv, ru / 1.6, rv / 1.6)
    tex = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma=max(w / 90, 1.0))
    tex = tex / (tex.std() + 1e-6)
    return np.clip(env * (0.75 + 0.45 * tex), 0.0, 1.2)
