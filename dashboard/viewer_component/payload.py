"""What the study viewer component is given: the study's own DICOM files as bytes, and its settings.

Plain functions, no Streamlit (STYLE rule 21). The browser never names a file: the paths come from
the store's study record (``logic.StudyDetail.images``, and a recorded prior study's), Python reads
the bytes after log-in, and they travel as component arguments. A file is read only after its header
passed the same pixel caps as ingest (`dicom_io.limits`), so a decompression bomb costs a header read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashboard.viewer import ViewerError

PRIOR_KEY = "prior_study_uid"
"""Study metadata key naming a previous study; used only when the store links no prior by patient
(``pipelines.store.priors``: same patient key, latest earlier study date)."""
MAX_VIEWS = 3
"""Frontal, lateral and the prior's frontal: more panels get too narrow to read on one screen."""


@dataclass(frozen=True)
class ViewerFile:
    """One panel of the viewer: its caption, view and the original file bytes.

    Attributes:
        label: caption shown on the panel (view name, "Prior · <date>" for the prior study); no PHI.
        view: the normalised view (PA, AP, LATERAL, UNKNOWN).
        data: the DICOM file exactly as stored (Part 10 bytes).
        digest: sha256 of ``data`` (the component reloads only when a digest changes).
    """

    label: str
    view: str
    data: bytes = field(repr=False)
    digest: str


def read_dicom_bytes(path: str | Path, *, limits: Any = None) -> bytes:
    """Read one DICOM file's bytes after checking its header against the pixel caps.

    Args:
        path: the file, from the store's study record.
        limits: ``dicom_io.limits.Limits``; None reads the environment.

    Returns:
        The file's bytes, unchanged.

    Raises:
        ViewerError: unreadable, not DICOM, or over a cap (the message names the file, never header text).
    """
    from dicom_io.errors import DicomIOError, ImageTooLarge
    from dicom_io.limits import check_pixel_budget
    from dicom_io.reader import read

    p = Path(path)
    try:
        ds = read(p)  # parses the header and keeps pixel bytes undecoded
        check_pixel_budget(ds, p, limits)
        return p.read_bytes()
    except ImageTooLarge as exc:
        raise ViewerError(f"cannot show {p}: {type(exc).__name__}, over {exc.setting} ({exc.hint})") from None
    except (DicomIOError, OSError) as exc:
        raise ViewerError(f"cannot show {p}: {type(exc).__name__}") from None


def viewer_file(label: str, view: str, path: str | Path, *, limits: Any = None) -> ViewerFile:
    """Read one panel's file (see ``read_dicom_bytes``) and fingerprint it."""
    data = read_dicom_bytes(path, limits=limits)
    return ViewerFile(label, view, data, hashlib.sha256(data).hexdigest())


def _view_label(view: str) -> str:
    return {"LATERAL": "Lateral", "UNKNOWN": "View", "FRONTAL": "Frontal"}.get(view, view)


def panel_images(images: Sequence[tuple[str, Path]], prior: Sequence[tuple[str, Path]] = (),
                 prior_date: str | None = None) -> list[tuple[str, str, Path]]:
    """The (label, view, path) panels: the study's first two views, then the prior's frontal (or first) view.

    Args:
        images: the study's (view, path) images, frontal first (``logic.study_images``).
        prior: the prior study's images, same form; empty when there is none.
        prior_date: the prior's study date (``YYYY-MM-DD``), shown as its label ("Prior · 2024-03-01");
            None labels it with its view instead. Only the date: never a name or an ID.

    Returns:
        At most ``MAX_VIEWS`` panels.
    """
    panels = [(_view_label(view), view, Path(p)) for view, p in images[:2]]
    if prior:
        view, path = prior[0]  # study_images sorts frontal first
        panels.append((f"Prior · {prior_date or _view_label(view)}", view, Path(path)))
    return panels[:MAX_VIEWS]


def prior_study_uid(metadata: Mapping[str, Any] | None, study_uid: str) -> str | None:
    """The prior study's UID recorded in a study's metadata, or None (never the study itself)."""
    value = (metadata or {}).get(PRIOR_KEY)
    return value if isinstance(value, str) and value and value != study_uid else None


def finding_rows(probabilities: Mapping[str, float] | None) -> list[dict[str, Any]]:
    """The classifier head's per-finding probabilities as overlay rows (likeliest first, >= 5%)."""
    if not probabilities:
        return []
    from medvlm.heads import probability_rows

    return [{"name": name, "p": round(p, 3), "sides": sides} for name, p, sides in probability_rows(probabilities)]


def component_args(files: Sequence[ViewerFile], *, windows: Sequence[tuple[float, float] | None],
                   preset: str, study_uid_hash: str, findings: Sequence[Mapping[str, Any]],
                   keys: bool, height: int) -> dict[str, Any]:
    """The keyword arguments of the component call.

    Bytes are top-level arguments (``img0``...): components v1 sends only top-level bytes as binary.

    Args:
        files: the panels, in order.
        windows: the chosen preset's (centre, width) per panel, None where the file's own window stays.
        preset: the preset's name ("default" keeps each file's own window on first load).
        study_uid_hash: an opaque per-study token (a new study re-applies the preset), not the UID.
        findings: overlay rows (``finding_rows``).
        keys: whether the study-level keys (next, previous, approve) are reported back.
        height: the component's height in pixels.

    Returns:
        Arguments for the component (JSON values plus ``img<i>`` bytes).
    """
    if len(windows) != len(files):
        raise ValueError(f"one window per panel: {len(files)} panels, {len(windows)} windows")
    args: dict[str, Any] = {
        "views": [{"label": f.label, "view": f.view, "arg": f"img{i}", "digest": f.digest} for i, f in enumerate(files)],
        "preset": {"token": f"{preset}:{study_uid_hash}", "is_default": preset == "default",
                   "windows": [list(w) if w is not None else None for w in windows]},
        "findings": {"title": "Image classifier (hide: o)", "rows": list(findings)},
        "keys": bool(keys),
        "height": int(height),
    }
    for i, f in enumerate(files):
        args[f"img{i}"] = f.data
    return args
