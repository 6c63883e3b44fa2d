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
its views); see `dicom` for how each is written. Each study draws from its own generators seeded
by (seed, index), so a study does not depend on the others and the same (n, seed, config) gives
byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.phantoms import phrases as P
from pipelines.phantoms.dicom import (
    DEFAULT_TRANSFER_SYNTAXES,
    SeriesInfo,
    available_transfer_syntaxes,
    phantom_uid,
    write_image,
)
from pipelines.phantoms.frontal import render_frontal
from pipelines.phantoms.lateral import render_lateral
from pipelines.phantoms.reports import build_report
from pipelines.phantoms.spec import FindingsSpec, PhantomError, sample_spec


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
        # A PhantomError is a ValueError too, so callers that caught ValueError still do.
        if self.size < 32:
            raise PhantomError(f"PhantomConfig.size must be >= 32, got {self.size}")
        if len(self.p_count) != 3 or min(self.p_count) < 0 or sum(self.p_count) <= 0:
            raise PhantomError(
                f"PhantomConfig.p_count must be three non-negative weights, got {self.p_count}"
            )
        if not self.transfer_syntaxes:
            raise PhantomError("PhantomConfig.transfer_syntaxes must not be empty")
        if sum(self.split_fractions) > 1.0 or min(self.split_fractions) < 0:
            raise PhantomError(
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
        """JSON-ready counts (the CLI prints them)."""
        return {
            "out": str(self.out),
            "studies": self.studies,
            "images": self.images,
            "findings": dict(self.findings),
            "transfer_syntaxes": dict(self.transfer_syntaxes),
            "splits": dict(self.splits),
        }


def _split(seed: int, index: int, fractions: tuple[float, float]) -> str:
    # A hash, not the study's generator: a study keeps its split whatever else is drawn or how many
    # studies the set has.
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
    study_uid = phantom_uid(seed, index, "study")
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
        info = SeriesInfo(
            view,
            number,
            phantom_uid(seed, index, "series", number),
            phantom_uid(seed, index, "sop", number),
            rel,
        )
        image = render(spec, config.size, rng)
        write_image(
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
        PhantomError: n < 1 or no requested transfer syntax can be written here.
        NotADirectoryError: `out` exists and is not a folder.
    """
    from pydicom.uid import UID

    config = config or PhantomConfig()
    if n < 1:
        raise PhantomError(f"n must be >= 1, got {n}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is not a folder: {out}")
    syntaxes = available_transfer_syntaxes(config.transfer_syntaxes)
    if not syntaxes:
        raise PhantomError("none of PhantomConfig.transfer_syntaxes has an encoder installed here")
    out.mkdir(parents=True, exist_ok=True)

    indices: Iterable[int] = range(n)
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
