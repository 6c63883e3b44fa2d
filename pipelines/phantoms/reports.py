"""Report text for a phantom study, assembled from its findings spec and the phrase tables.

The wording is drawn from `phrases` with the study's own generator; the content is the spec's, so
the report, the labels and the pixels always agree. Sides are the patient's.
"""

from __future__ import annotations

import numpy as np

from pipelines.phantoms import phrases as P
from pipelines.phantoms.spec import Finding, FindingsSpec


def _pick(rng: np.random.Generator, options: tuple[str, ...], **fmt: str) -> str:
    # Each placeholder also has a capitalised twin ({side} -> {Side}) for sentence starts.
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

    Args:
        spec: what the study shows.
        rng: the study's text generator (picks one variant of each phrase).

    Returns:
        (findings, impression): the FINDINGS paragraph and the IMPRESSION, numbered when it
        holds more than one item.
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
