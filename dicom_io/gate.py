"""Input gate: only chest radiographs (CR/DX) go on to the model.

Rules, in order (the first that fails rejects with `NotAChestRadiograph`):

1. Modality must be ``CR`` or ``DX`` (computed / digital radiography). CT, MR, US, SR ... and a
   missing Modality are rejected.
2. Body part: when ``BodyPartExamined`` is present it decides alone: it must name the chest
   (``CHEST``, ``THORAX``, ``LUNG``/``LUNGS``, also inside longer values such as ``CHEST_PA``).
   pydicom-data's ``RG1_*`` say ``CHEST`` (accepted), ``RG3_*`` say ``EXTREMITY`` (rejected).
3. When ``BodyPartExamined`` is absent or empty, the descriptions (StudyDescription,
   SeriesDescription, ProtocolName, RequestedProcedureDescription,
   PerformedProcedureStepDescription) decide: rejected if they name another body part (e.g.
   "KNEE", "TIBIA", "ABDOMEN") and none names the chest; otherwise accepted, because many chest
   radiographs are sent without the tag and the model's own checks come later.
4. The image must be 2-D and at least `MIN_SIZE` pixels on each side.

PNG/JPEG images (`has_dicom_metadata=False`) have no header to check: only rule 4 applies and
the caller is trusted to have put chest images in the folder.

`load_chest_image(path)` reads one file, gates it before its pixels are decoded, then decodes and
normalises it: the per-file step of ingest and of the drafting job's intake.

Rejection messages name the rule and the offending keyword only (never free-text descriptions,
which may contain PHI).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from dicom_io.errors import NotAChestRadiograph, PixelDataError
from dicom_io.limits import Limits
from dicom_io.reader import IMAGE_SUFFIXES, get_data, header_meta, read
from dicom_io.study import ImageMeta, MissingUID

if TYPE_CHECKING:
    import numpy as np
    from pydicom.dataset import Dataset

MODALITIES = ("CR", "DX")
"""Accepted modalities."""
MIN_SIZE = 64
"""Smallest accepted rows/columns; smaller images are icons or scout thumbnails."""
CHEST_WORDS = ("CHEST", "THORAX", "THORACIC", "LUNG", "LUNGS", "THORAKS", "TORAX", "TORACE", "POITRINE")
OTHER_BODY_PARTS = (
    "ABDOMEN", "PELVIS", "SKULL", "HEAD", "BRAIN", "NECK", "CSPINE", "TSPINE", "LSPINE", "SPINE", "SACRUM",
    "COCCYX", "SHOULDER", "CLAVICLE", "HUMERUS", "ELBOW", "FOREARM", "RADIUS", "ULNA", "WRIST", "HAND", "FINGER",
    "THUMB", "HIP", "FEMUR", "KNEE", "PATELLA", "LEG", "TIBIA", "FIBULA", "ANKLE", "FOOT", "HEEL", "CALCANEUS",
    "TOE", "EXTREMITY", "BREAST", "MAMMO", "MAMMOGRAPHY", "DENTAL", "TEETH", "JAW", "MANDIBLE", "SINUS",
    "FACE", "ORBIT", "KUB",
)
DESCRIPTION_KEYWORDS = ("StudyDescription", "SeriesDescription", "ProtocolName", "RequestedProcedureDescription",
                        "PerformedProcedureStepDescription")

_WORD = re.compile(r"[A-Z]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.upper()))


def descriptions(ds: Dataset) -> tuple[str, ...]:
    """The free-text descriptions the gate looks at (for rule 3); never logged."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on odd values; they are only matched here
        for keyword in DESCRIPTION_KEYWORDS:
            try:
                value = ds.get(keyword)
            except Exception:  # noqa: BLE001 - a malformed element counts as absent
                value = None
            if value:
                out.append(str(value))
    return tuple(out)


def _names(words: set[str], vocabulary: Iterable[str]) -> str | None:
    return next((w for w in vocabulary if w in words), None)


def check_chest_radiograph(meta: ImageMeta, texts: Iterable[str] = ()) -> None:
    """Raise unless the image is a chest radiograph (rules in the module docstring).

    Args:
        meta: the image's metadata.
        texts: the image's descriptions (from `descriptions(ds)`), used when the body part is absent.

    Raises:
        NotAChestRadiograph: with the rule that failed and the offending value or keyword.
    """
    where = meta.source_path or None
    rows, cols = meta.original_shape
    if meta.has_dicom_metadata:
        if meta.modality not in MODALITIES:
            found = meta.modality or "absent"
            raise NotAChestRadiograph(where, f"modality {found} is not a radiograph (need CR or DX)",
                                      "send only chest radiographs (CR/DX); other modalities are out of scope")
        body = meta.body_part
        if body:
            if not any(word in body.upper() for word in CHEST_WORDS):
                raise NotAChestRadiograph(where, f"body part {body} is not the chest",
                                          "send only chest radiographs; fix BodyPartExamined if it is wrong")
        else:
            words = set().union(*(_words(t) for t in texts)) if texts else set()
            other = _names(words, OTHER_BODY_PARTS)
            if other is not None and _names(words, CHEST_WORDS) is None:
                raise NotAChestRadiograph(where, f"no body part, and the descriptions name {other}",
                                          "send only chest radiographs; set BodyPartExamined=CHEST if it is one")
    if rows < MIN_SIZE or cols < MIN_SIZE:
        raise NotAChestRadiograph(where, f"image {rows}x{cols} is smaller than {MIN_SIZE}x{MIN_SIZE}",
                                  "send the full-resolution radiograph, not a thumbnail")


def check_dataset(ds: Dataset, meta: ImageMeta) -> None:
    """`check_chest_radiograph` with the descriptions taken from `ds`.

    Raises:
        NotAChestRadiograph: see `check_chest_radiograph`.
    """
    check_chest_radiograph(meta, descriptions(ds))


def load_chest_image(path: str | Path, *, window: str = "auto", size: int | None = None,
                     limits: Limits | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read one file, gate it (chest CR/DX) before decoding, then decode and normalise it.

    Unlike `dicom_io.reader.load_image`, a file that is not a chest radiograph is refused before its
    (costly) pixel data is decoded, and a DICOM file must carry its Study, Series and SOP Instance UIDs.

    Args:
        path: a DICOM, PNG or JPEG file.
        window: intensity rule (see `dicom_io.normalise`).
        size: if given, also resize to (size, size), aspect kept by padding.
        limits: caps on pixels per frame, frames and compression ratio, checked from the header
            before any decode (`dicom_io.limits.Limits`); None reads them from the environment.

    Returns:
        (pixels, meta): (H, W) or (size, size) float32 in [0, 1], and its `ImageMeta`.

    Raises:
        DicomIOError: a subclass with the reason (unreadable, not a chest radiograph, missing UID,
            `ImageTooLarge` naming the setting ...).
    """
    p = Path(path)
    limits = limits or Limits.from_env()
    if p.suffix.lower() in IMAGE_SUFFIXES:
        from dicom_io.images import read_image

        pixels, meta = read_image(p, window=window, limits=limits)
        check_chest_radiograph(meta)
    else:
        ds = read(p)
        if "PixelData" not in ds:
            # Checked before the gate: a file cut short in its header would otherwise be misreported
            # as "modality absent" instead of as the truncated file it is.
            raise PixelDataError(p, "no pixel data (file truncated, or not an image object)",
                                 "re-export the image from the PACS or modality")
        check_dataset(ds, header_meta(ds, p))  # gate before the (costly) decode
        pixels, meta = get_data(ds, window=window, path=p, limits=limits)  # caps checked before decoding
        if not (meta.study_uid and meta.series_uid and meta.sop_uid):
            raise MissingUID(p, "Study, Series or SOP Instance UID missing",
                             "the sender must fill the UIDs; de-identification tools can generate them")
    if size is not None:
        from dicom_io.sitk_reader import resize

        pixels = resize(pixels, int(size), keep_aspect=True)
    return pixels, meta
