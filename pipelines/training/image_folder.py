"""Image folders as training data: unlabelled images for pretraining, labelled class folders as (image, report) pairs.

A labelled folder has one subfolder per class (`NORMAL/`, `PNEUMONIA/`: the Kermany layout). Each image becomes a
one-view study whose reference report is derived from its label alone (`LABEL_REPORTS`; the kind of pneumonia
comes from the file name's `_bacteria_` / `_virus_`), so the labeler reads exactly the label back (Pneumonia
positive, or No Finding). These are not radiologists' reads: the recipe learns "pneumonia or not, and which kind".

`write_index(src, out)` writes `out/reports.jsonl` in the layout of `pipelines.training.datasets` (absolute image
paths, plus `label`, `kind` and `child` fields the loader ignores), so every recipe, the image cache and
`medvlm evaluate` read the folder like any other data folder. The split is **by child**: all images of one child
(`personN_` in a PNEUMONIA name, the `IM-NNNN` part of a NORMAL one) land on one side, drawn per class so both
sides keep the class ratio; byte-identical copies are kept once (the first in name order).

    python -m pipelines.training.image_folder SRC OUT [--val-fraction 0.2] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compliance.clock import sha256_file
from dicom_io.reader import IMAGE_SUFFIXES
from pipelines.training.datasets import REPORTS_FILE, DatasetError

DICOM_SUFFIXES = (".dcm", ".dicom")
NORMAL = "NORMAL"
LABEL_REPORTS: dict[str, tuple[str, str]] = {
    "normal": ("The lungs are clear. No focal consolidation, pleural effusion or pneumothorax.",
               "No acute cardiopulmonary abnormality."),
    "bacteria": ("Focal airspace consolidation, consistent with pneumonia.",
                 "Findings consistent with bacterial pneumonia."),
    "virus": ("Diffuse bilateral interstitial opacities, consistent with pneumonia.",
              "Findings consistent with viral pneumonia."),
    "pneumonia": ("Airspace opacities, consistent with pneumonia.", "Findings consistent with pneumonia."),
}
"""(findings, impression) per label kind: normal, bacterial, viral, or pneumonia of unknown kind."""
_CHILD = (re.compile(r"(person\d+)_", re.IGNORECASE), re.compile(r"^(.*IM-\d+)", re.IGNORECASE))


@dataclass(frozen=True)
class LabelledImage:
    """One image of a labelled folder."""

    path: Path
    """Absolute path of the image."""
    label: str
    """Its class folder's name, upper case (NORMAL, PNEUMONIA)."""
    kind: str
    """Report kind: normal, bacteria, virus or pneumonia (a key of `LABEL_REPORTS`)."""
    child: str
    """Who the image shows (`personN`, `IM-NNNN`; the file stem when the name says nothing): the split unit."""


def list_images(root: str | Path) -> list[Path]:
    """Image files under `root` (recursive, sorted): PNG/JPEG, `.dcm`, and suffix-less files that sniff as DICOM."""
    from dicom_io.errors import DicomIOError
    from dicom_io.limits import sniff

    out = []
    for p in sorted(Path(root).rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        suffix = p.suffix.lower()
        if suffix in IMAGE_SUFFIXES or suffix in DICOM_SUFFIXES:
            out.append(p)
        elif not suffix:
            try:
                if sniff(p) == "dicom":
                    out.append(p)
            except DicomIOError:
                continue
    return out


def unique_files(paths: Sequence[Path]) -> list[Path]:
    """`paths` without byte-identical copies (the first of each kept, order preserved), as `medvlm ingest` does."""
    seen: set[str] = set()
    out = []
    for p in paths:
        digest = sha256_file(p)
        if digest not in seen:
            seen.add(digest)
            out.append(p)
    return out


def is_labelled_folder(root: str | Path) -> bool:
    """A folder without `reports.jsonl` whose subfolders hold images (one subfolder per class)."""
    root = Path(root)
    if not root.is_dir() or (root / REPORTS_FILE).is_file():
        return False
    return any(d.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES for f in d.iterdir())
               for d in root.iterdir())


def child_of(name: str) -> str:
    """The child an image shows, from its file name (`person12_bacteria_3.jpeg` -> `person12`)."""
    for pattern in _CHILD:
        m = pattern.search(name)
        if m:
            return m.group(1)
    return Path(name).stem


def kind_of(label: str, name: str) -> str:
    """Report kind of an image: normal for the NORMAL class, else bacteria/virus from the name, else pneumonia."""
    if label == NORMAL:
        return "normal"
    lowered = name.lower()
    return "bacteria" if "_bacteria_" in lowered else "virus" if "_virus_" in lowered else "pneumonia"


def scan_labelled_folder(root: str | Path) -> list[LabelledImage]:
    """Every unique image of a labelled folder (class = subfolder), in class then name order.

    Raises:
        DatasetError: no class subfolder with images.
    """
    root = Path(root)
    items, seen = [], set()
    for folder in sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []:
        label = folder.name.upper()
        for p in list_images(folder):
            digest = sha256_file(p)  # byte-identical copies (also across classes): keep the first
            if digest not in seen:
                seen.add(digest)
                items.append(LabelledImage(p.resolve(), label, kind_of(label, p.name), f"{label}/{child_of(p.name)}"))
    if not items:
        raise DatasetError(f"{root}: no class subfolder with images (expected e.g. NORMAL/ and PNEUMONIA/)")
    return items


def child_split(items: Sequence[LabelledImage], val_fraction: float, seed: int = 0) -> dict[str, str]:
    """`{child: "train" | "val"}`: per class, a seeded shuffle of its children, the first `val_fraction` to val."""
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out: dict[str, str] = {}
    for k, label in enumerate(sorted({i.label for i in items})):
        children = sorted({i.child for i in items if i.label == label})
        order = np.random.default_rng([seed, k]).permutation(len(children))
        n_val = int(round(val_fraction * len(children)))
        for rank, idx in enumerate(order):
            out[children[idx]] = "val" if rank < n_val else "train"
    return out


def write_index(src: str | Path, out: str | Path, *, val_fraction: float = 0.2, seed: int = 0,
                all_split: str | None = None) -> Path:
    """Write `out/reports.jsonl` for a labelled folder: one one-view study per unique image, split by child.

    Args:
        src: the labelled folder (one subfolder per class).
        out: the data folder to write (created).
        val_fraction: share of each class's children held out as `val`.
        seed: the split's seed.
        all_split: put every image in this split instead (e.g. "test": a folder that is all held out).

    Returns:
        `out`.
    """
    items = scan_labelled_folder(src)
    splits = child_split(items, val_fraction, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for item in items:
        findings, impression = LABEL_REPORTS[item.kind]
        uid = int.from_bytes(hashlib.sha256(f"medvlm-folder:{item.path.name}".encode()).digest()[:16], "big")
        lines.append(json.dumps({
            "study_uid": f"2.25.{uid}", "findings": findings, "impression": impression, "indication": "",
            "split": all_split or splits[item.child], "views": [{"path": str(item.path), "view": "FRONTAL"}],
            "label": item.label, "kind": item.kind, "child": item.child,
        }))
    tmp = out / f"{REPORTS_FILE}.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(out / REPORTS_FILE)
    return out


def folder_labels(data_dir: str | Path, splits: Sequence[str]) -> list[str] | None:
    """The `label` of each record of `splits` in file order (as `load_records` returns them); None without labels."""
    path = Path(data_dir) / REPORTS_FILE
    wanted = set(splits)
    labels = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            obj = json.loads(line)
            if obj.get("split", "train") in wanted:
                if "label" not in obj:
                    return None
                labels.append(str(obj["label"]))
    return labels


def main(argv: list[str] | None = None) -> None:
    """`python -m pipelines.training.image_folder SRC OUT [--val-fraction F] [--seed S]`: write the index."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.training.image_folder", description=main.__doc__)
    parser.add_argument("src")
    parser.add_argument("out")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = write_index(args.src, args.out, val_fraction=args.val_fraction, seed=args.seed)
    counts: dict[str, int] = {}
    for line in (out / REPORTS_FILE).read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        key = f"{obj['split']}/{obj['label']}"
        counts[key] = counts.get(key, 0) + 1
    print(json.dumps({"index": str(out / REPORTS_FILE), "counts": dict(sorted(counts.items()))}))


if __name__ == "__main__":  # pragma: no cover - tests call main() directly
    main()
