"""Score the report labeler against the curators' MeSH tags of the IU chest X-ray reports.

Usage::

    python benchmarks/score_labeler.py [--data PATH]
        [--errors OBSERVATION --split train [--uncertain-positive] [--devices-block-no-finding]]

Reads ``$MEDVLM_SHARED_DATA/iu_reports/reports.jsonl`` (default ``/work/shared/data/...`` or
``../shared/data`` beside the checkout); when absent it prints ``{"skipped": true, "reason": ...}``
and exits 0. Prints one JSON object: per split (``train`` for development, ``val``, and ``unsplit``, the
held-out fold described below) and per
observation precision / recall / F1 / support, with "uncertain" counted as negative
(``strict``) and as positive (``uncertain_positive``), the macro-F1 over the six observations most
frequent in the train tags, and the same figures for a named baseline (a plain keyword matcher
with a five-word negation window) with the labeler's macro-F1 as a ratio to it.

Two labeler settings are scored: ``labeler`` (the product default, CheXpert semantics) and
``labeler_mesh_convention`` (``devices_block_no_finding=True``: a report that mentions a support
device is not "No Finding", because the IU curators never tag such a report ``normal``).

Primary metric (``primary_metric`` in the output): macro-F1 over the six observations of
``labeler_mesh_convention`` with "uncertain" counted as positive. Why: the MeSH tags index what a
report *mentions as present, hedged or not*; the curators tag hedged findings ("scarring or
atelectasis" gets ``Pulmonary Atelectasis``; "borderline cardiomegaly" gets
``Cardiomegaly/borderline``), so a tag corresponds to a CheXpert label of positive *or* uncertain.
The strict figures (uncertain counted as negative) and the default-setting figures are still
printed beside it, so nothing is hidden.

Tag mapping (decided here, documented for the reader): a MeSH heading (the part of a tag before
the first "/") maps to an observation as in ``TAG_MAP``. Granulomas (``Calcified Granuloma``,
``Granuloma``, ``Granulomatous Disease``) are *not* Lung Lesion: they are benign healed lesions,
CheXpert's mention list leaves them out, and so does our labeler (they only stop "No Finding").
``Pulmonary Congestion`` counts as Edema (CheXpert labels vascular congestion as edema).
Reports tagged ``No Indexing`` (the curators did not index them) are left out of the scoring.

Which figure generalises: the labeler was tuned reading errors on ``train`` and its figure was watched on
``val``, so both flatter it. The 1,000 ``unsplit`` reports (IU reports outside the R2Gen split) were never
scored while the labeler was tuned: ``run`` did not score them and ``--errors`` refuses them, so no tuning
decision can look at them. Their figure (``held_out`` in the output) is the one a stranger would get, and
the one the README reports; the fold is fixed by the data's own ``split`` field, not chosen here.

The report text is never printed (its licence forbids redistribution); ``--errors`` prints uids only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from medvlm.labeler import OBSERVATIONS, label_record, report_text  # noqa: E402

TAG_MAP: dict[str, str] = {
    "normal": "No Finding",
    "Cardiomegaly": "Cardiomegaly",
    "Cardiac Shadow/enlarged": "Cardiomegaly",
    "Mediastinum/prominent": "Enlarged Cardiomediastinum",
    "Opacity": "Lung Opacity",
    "Airspace Disease": "Lung Opacity",
    "Infiltrate": "Lung Opacity",
    "Density/lung": "Lung Opacity",
    "Nodule": "Lung Lesion",
    "Mass/lung": "Lung Lesion",
    "Mass/thorax": "Lung Lesion",
    "Mass/right": "Lung Lesion",
    "Mass/left": "Lung Lesion",
    "Mass": "Lung Lesion",
    "Pulmonary Edema": "Edema",
    "Pulmonary Congestion": "Edema",
    "Consolidation": "Consolidation",
    "Pneumonia": "Pneumonia",
    "Pulmonary Atelectasis": "Atelectasis",
    "Pneumothorax": "Pneumothorax",
    "Hydropneumothorax": "Pneumothorax",
    "Hemopneumothorax": "Pneumothorax",
    "Pleural Effusion": "Pleural Effusion",
    "Thickening/pleura": "Pleural Other",
    "Fractures, Bone": "Fracture",
    "Catheters, Indwelling": "Support Devices",
    "Surgical Instruments": "Support Devices",
    "Implanted Medical Device": "Support Devices",
    "Medical Device": "Support Devices",
    "Tube, Inserted": "Support Devices",
    "Stents": "Support Devices",
    "Sutures": "Support Devices",
}
"""MeSH tag prefix (heading, or heading/first qualifier) -> observation."""

N_TOP = 6  # macro-F1 over the six observations most frequent in the train tags


def default_data_path() -> Path:
    """Where the IU reports are: ``$MEDVLM_SHARED_DATA``, else ``../shared/data`` beside the repo."""
    env = os.environ.get("MEDVLM_SHARED_DATA")
    roots = ([Path(env)] if env else []) + [REPO_ROOT.parent / "shared" / "data", Path("/work/shared/data")]
    for root in roots:
        path = root / "iu_reports" / "reports.jsonl"
        if path.is_file():
            return path
    return roots[0] / "iu_reports" / "reports.jsonl"


def tags_to_observations(tags: Iterable[str]) -> set[str]:
    """Observations a report's ``mesh_major`` tags name (see ``TAG_MAP``)."""
    found: set[str] = set()
    for tag in tags:
        parts = [p.strip() for p in tag.split("/")]
        for key in ("/".join(parts[:2]), parts[0]):
            if key in TAG_MAP:
                found.add(TAG_MAP[key])
                break
    return found


# A named baseline: keywords plus a five-word negation window (what a quick script would do).
_BASELINE_KEYWORDS: dict[str, str] = {
    "Cardiomegaly": r"cardiomegaly|enlarged heart|heart (?:size )?is enlarged",
    "Lung Opacity": r"opacit\w+|infiltrat\w+|airspace disease",
    "Lung Lesion": r"nodul\w+|mass\b",
    "Edema": r"edema|congestion",
    "Consolidation": r"consolidation",
    "Pneumonia": r"pneumonia",
    "Atelectasis": r"atelecta\w+",
    "Pneumothorax": r"pneumothorax",
    "Pleural Effusion": r"effusion",
    "Fracture": r"fracture",
    "Support Devices": r"pacemaker|catheter|line|tube|clips|wires|sternotomy",
}
_BASELINE_NEG = re.compile(r"\b(?:no|not|without|negative|free of)\b")


def baseline_labels(record: dict) -> dict[str, str]:
    """The keyword-matcher baseline: positive unless a negation word is in the 5 words before."""
    labels: dict[str, str] = {}
    for sentence in re.split(r"\.\s+|\n", report_text(record).lower()):
        for obs, pattern in _BASELINE_KEYWORDS.items():
            for match in re.finditer(pattern, sentence):
                window = " ".join(sentence[: match.start()].split()[-5:])
                value = "negative" if _BASELINE_NEG.search(window) else "positive"
                if labels.get(obs) != "positive":
                    labels[obs] = value
    if not any(v == "positive" for o, v in labels.items() if o != "Support Devices"):
        labels["No Finding"] = "positive"
    return labels


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "support": tp + fn,
    }


def score_split(
    records: list[dict], predict: Callable[[dict], dict[str, str]], top: list[str]
) -> dict[str, object]:
    """Per-observation precision/recall/F1 of ``predict`` against the mapped tags.

    Args:
        records: report records (``findings``, ``impression``, ``mesh_major``).
        predict: record -> ``{observation: value}``.
        top: the observations whose F1 the macro average takes.

    Returns:
        ``{"n_reports", "strict": {...}, "uncertain_positive": {...}}``, each with
        ``per_observation`` and ``macro_f1_top``.
    """
    counts = {mode: {obs: [0, 0, 0] for obs in OBSERVATIONS} for mode in ("strict", "uncertain_positive")}
    for record in records:
        gold = tags_to_observations(record["mesh_major"])
        labels = predict(record)
        for mode, positives in (("strict", {"positive"}), ("uncertain_positive", {"positive", "uncertain"})):
            for obs in OBSERVATIONS:
                pred = labels.get(obs) in positives
                truth = obs in gold
                c = counts[mode][obs]
                c[0] += pred and truth
                c[1] += pred and not truth
                c[2] += truth and not pred
    result: dict[str, object] = {"n_reports": len(records)}
    for mode, per in counts.items():
        table = {obs: _prf(*per[obs]) for obs in OBSERVATIONS}
        macro = sum(table[o]["f1"] for o in top) / len(top)
        result[mode] = {"per_observation": table, "macro_f1_top": round(macro, 4)}
    return result


def load_records(path: Path) -> list[dict]:
    """Records with text, leaving out the ones the curators did not index."""
    records = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if "No Indexing" in record["mesh_major"] or not report_text(record):
                continue
            records.append(record)
    return records


HELD_OUT = "unsplit"
"""The fold no tuning decision looked at (see the module docstring)."""
PRIMARY_SETTING = "labeler_mesh_convention"
PRIMARY_MODE = "uncertain_positive"
PRIMARY_DEFINITION = (
    "macro-F1 over the six observations most frequent in the train tags; labeler with "
    "devices_block_no_finding=True; a label of 'positive' or 'uncertain' counts as a predicted tag"
)


def run(path: Path) -> dict[str, object]:
    """Score the labeler and the baseline on train and val; returns the JSON-able result."""
    records = load_records(path)
    by_split = {s: [r for r in records if r["split"] == s] for s in ("train", "val", HELD_OUT)}
    freq: dict[str, int] = {}
    for record in by_split["train"]:
        for obs in tags_to_observations(record["mesh_major"]):
            freq[obs] = freq.get(obs, 0) + 1
    top = sorted(freq, key=lambda o: (-freq[o], OBSERVATIONS.index(o)))[:N_TOP]

    def predictor(devices_block_no_finding: bool) -> Callable[[dict], dict[str, str]]:
        def predict(record: dict) -> dict[str, str]:
            labels = label_record(record, devices_block_no_finding=devices_block_no_finding)
            return {obs: lab.value for obs, lab in labels.items()}

        return predict

    out: dict[str, object] = {
        "data": str(path),
        "top_observations": top,
        "tag_map": TAG_MAP,
        "primary_metric": {
            "definition": PRIMARY_DEFINITION,
            "setting": PRIMARY_SETTING,
            "mode": PRIMARY_MODE,
        },
    }
    for split, recs in by_split.items():
        if not recs:
            continue
        labeler = score_split(recs, predictor(False), top)
        mesh = score_split(recs, predictor(True), top)
        baseline = score_split(recs, baseline_labels, top)
        ratio = labeler["strict"]["macro_f1_top"] / max(baseline["strict"]["macro_f1_top"], 1e-9)
        out["primary_metric"][split] = mesh[PRIMARY_MODE]["macro_f1_top"]
        out[split] = {
            "labeler": labeler,
            "labeler_mesh_convention": mesh,
            "baseline_keyword_negation_window": {
                m: {"macro_f1_top": baseline[m]["macro_f1_top"]} for m in ("strict", "uncertain_positive")
            },
            "ratio_to_baseline_macro_f1_strict": round(ratio, 4),
        }
    if HELD_OUT in out:
        out["held_out"] = {
            "split": HELD_OUT,
            "n_reports": len(by_split[HELD_OUT]),
            "why": "never scored or error-read while the labeler was tuned (--errors refuses it)",
            "primary_metric": out["primary_metric"][HELD_OUT],
            "strict_default_setting": out[HELD_OUT]["labeler"]["strict"]["macro_f1_top"],
        }
    return out


def error_uids(
    path: Path,
    observation: str,
    split: str,
    *,
    uncertain_positive: bool = False,
    devices_block_no_finding: bool = False,
) -> dict[str, list[int]]:
    """uids of false positives and false negatives for one observation (no text printed).

    By default "uncertain" counts as negative (strict) with the product's default labeler setting;
    the keywords select the primary metric's definition instead.
    """
    positives = {"positive", "uncertain"} if uncertain_positive else {"positive"}
    fps, fns = [], []
    for record in load_records(path):
        if record["split"] != split:
            continue
        truth = observation in tags_to_observations(record["mesh_major"])
        labels = label_record(record, devices_block_no_finding=devices_block_no_finding)
        pred = observation in labels and labels[observation].value in positives
        if pred and not truth:
            fps.append(record["uid"])
        elif truth and not pred:
            fns.append(record["uid"])
    return {"false_positive": fps, "false_negative": fns}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="path to iu_reports/reports.jsonl")
    parser.add_argument("--errors", default=None, help="print error uids for this observation instead")
    parser.add_argument("--split", default="train", help="split for --errors (tune on train only)")
    parser.add_argument(
        "--uncertain-positive", action="store_true", help="--errors: count 'uncertain' as positive"
    )
    parser.add_argument(
        "--devices-block-no-finding", action="store_true", help="--errors: the MeSH-convention setting"
    )
    args = parser.parse_args(argv)
    path = args.data or default_data_path()
    if not path.is_file():
        print(json.dumps({"skipped": True, "reason": f"IU reports not found at {path}"}))
        return 0
    if args.errors:
        if args.split == HELD_OUT:
            print(json.dumps({"refused": f"--errors never reads the held-out {HELD_OUT!r} fold: tune on train"}))
            return 2
        errors = error_uids(
            path,
            args.errors,
            args.split,
            uncertain_positive=args.uncertain_positive,
            devices_block_no_finding=args.devices_block_no_finding,
        )
        print(json.dumps(errors))
        return 0
    print(json.dumps(run(path), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
