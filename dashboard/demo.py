"""Seed a review store from phantom studies (for the demo without a trained model, and tests).

Drafts here are the phantom's own reports split into sentences, with confidences drawn from a
seeded RNG and consistency flags from ``medvlm.consistency``: they exercise every part of the
review page without a model. The real demo drafts with the trained model through the batch job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dashboard import logic

if TYPE_CHECKING:
    from pipelines.store import Store

SCRIPT_PROBE = ("<script>window['medvlm_xss']=1</script> <img src=x onerror=\"window['medvlm_img']=1\"> "
                "**not bold** [link](javascript:alert(1)) :red[not red]")
"""Text that must show literally (tests put it into a draft to prove nothing renders as HTML)."""
CONTRADICTION_PROBE = "No pulmonary edema."
"""Added to the first study's impression with ``probe_first`` so that its draft carries a flag
whenever its findings assert an observation the probe negates (phantom study 0 of seed 1: edema)."""


def _sentences(findings: str, impression: str, rng: np.random.Generator) -> list[dict[str, Any]]:
    from medvlm.labeler import split_sentences

    out = []
    for section, text in (("findings", findings), ("impression", impression)):
        for sentence in split_sentences(text):
            sentence = sentence if sentence[-1:] in ".!?" else sentence + "."  # the splitter drops the stop
            # Mostly confident, about one sentence in five below the highlight threshold.
            conf = float(rng.uniform(0.2, 0.45) if rng.random() < 0.2 else rng.uniform(0.6, 0.98))
            out.append({"text": sentence, "section": section, "confidence": round(conf, 3)})
    return out


def seed_from_phantoms(store: Store, phantom_dir: str | Path, *, seed: int = 0, limit: int | None = None,
                       probe_first: bool = False, model_version: str = "medvlm/demo") -> list[str]:
    """Add each phantom study of ``phantom_dir/reports.jsonl`` with a drafted report.

    Args:
        store: an open review store.
        phantom_dir: output folder of ``pipelines.phantoms.generate_phantoms``.
        seed: seed of the confidence RNG.
        limit: at most this many studies.
        probe_first: put ``SCRIPT_PROBE`` as a sentence into the first study's findings and give
            that study the top priority (3), so it heads the default worklist.
        model_version: recorded as the drafting model.

    Returns:
        The study UIDs added, in file order.
    """
    from medvlm.consistency import check_consistency

    rng = np.random.default_rng(seed)
    root = Path(phantom_dir).resolve()
    uids: list[str] = []
    with open(root / "reports.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if limit is not None and i >= limit:
                break
            rec = json.loads(line)
            findings, impression = rec["findings"], rec["impression"]
            if probe_first and i == 0:
                findings = f"{findings} {SCRIPT_PROBE}"
                impression = f"{impression} {CONTRADICTION_PROBE}"
            sentences = _sentences(findings, impression, rng)
            flags = [
                {"code": f.code, "message": f.message, "sentence_indices": list(f.sentence_indices)}
                for f in check_consistency(findings, impression, has_prior=False)
            ]
            metadata = {
                "study_id": rec["study_id"],
                "indication": rec.get("indication"),
                "images": [{"path": v["path"], "view": v["view"]} for v in rec["views"]],
            }
            logic.seed_study(store, study_uid=rec["study_uid"], source=str(root), metadata=metadata,
                             findings=findings, impression=impression, sentences=sentences,
                             flags={"consistency": flags}, model_version=model_version,
                             priority=3 if probe_first and i == 0 else int(i % 3))
            uids.append(rec["study_uid"])
    return uids


__all__ = ["CONTRADICTION_PROBE", "SCRIPT_PROBE", "seed_from_phantoms"]
