"""The phantom patient: body habitus and exposure drawn per study, and density -> radiograph.

Both views of a study draw the same `Body` from equal generators, so a finding and its normal
twin differ only by the finding (the renderers' tests rely on this).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.phantoms.canvas import grid, image_hw
from pipelines.phantoms.spec import FindingsSpec


@dataclass(frozen=True)
class Body:
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


def draw_body(rng: np.random.Generator, spec: FindingsSpec) -> Body:
    """Draw one patient and exposure, then adjust it for the spec (heart size, volume loss).

    Args:
        rng: the view's body generator; it always makes the same number of draws.
        spec: the study's findings (cardiomegaly sets the cardiothoracic ratio, atelectasis lifts
            the hemidiaphragm on its side).

    Returns:
        The body parameters both views are drawn with.
    """
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
    return Body(ctr, lung_w, apex, dome_r, dome_l, air, mu, angle, (du, dv), scale, noise, heel, tissue)


def expose(density: np.ndarray, body: Body, rng: np.random.Generator) -> np.ndarray:
    """Turn a density map into a radiograph: attenuation, positioning, heel effect and noise.

    Args:
        density: float32 (H, W) projected density (0 = air, about 2.6 = bone over soft tissue).
        body: the patient and exposure parameters.
        rng: the view's noise generator.

    Returns:
        float32 (H, W) in [0, 1], display convention (bright = dense).
    """
    from scipy import ndimage

    h, w = density.shape
    img = 1.0 - np.exp(-body.mu * density)
    img /= 1.0 - math.exp(-body.mu * 2.6)  # full scale at about bone + soft tissue
    theta = math.radians(body.angle)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]) / body.scale
    centre = np.array([h / 2.0, w / 2.0])
    offset = centre - rot @ centre - np.array([body.shift[1] * h, body.shift[0] * w])
    img = ndimage.affine_transform(img, rot, offset=offset, order=1, mode="constant", cval=0.0)
    _, v = grid(h, w)
    img = img * (1.0 + body.heel * (v - 0.5) * 2.0)
    speckle = rng.standard_normal((h, w)).astype(np.float32)
    mottle = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma=max(h / 64, 1.0))
    img = img + body.noise * speckle + 2.0 * body.noise * mottle * (h / 64)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def render_view(
    spec: FindingsSpec,
    size: int,
    rng: np.random.Generator | None,
    anatomy: Callable[[Body, int, int, np.random.Generator], Any],
    draw: Mapping[str, Callable[[Any, Any, np.random.Generator], None]],
) -> np.ndarray:
    """The steps every view shares: body, the view's anatomy, its findings in spec order, exposure.

    Args:
        spec: the study's findings.
        size: image side in pixels.
        rng: the study's generator (split into body, markings, findings and noise streams so that a study
            and its normal twin rendered from equal generators differ only by the findings).
        anatomy: the view's normal chest builder; returns an object with `density`, `air`, `mark_w`, `marks`.
        draw: the view's drawing function per finding kind.

    Returns:
        float32 array (H, W) in [0, 1], display convention (bright = dense).
    """
    h, w = image_hw(size)
    rng = rng if rng is not None else np.random.default_rng(0)
    body_rng, mark_rng, find_rng, noise_rng = rng.spawn(4)
    b = draw_body(body_rng, spec)
    chest = anatomy(b, h, w, mark_rng)
    for f in spec.findings:
        fn = draw.get(f.kind)
        if fn is not None:
            fn(chest, f, find_rng)  # findings share one generator, drawn in spec order
    density = chest.density - chest.air + chest.mark_w * chest.marks
    return expose(np.clip(density, 0.0, None), b, noise_rng)
