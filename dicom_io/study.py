"""Image metadata without PHI, view normalisation, and grouping into study → series → image.

`ImageMeta` keeps only what the pipeline needs to route and display an image: UIDs, modality,
body part, view, laterality, geometry and encoding. It never holds patient name, ID, birth date,
sex, age, dates, accession numbers, institution or free-text descriptions.

The view of an image is found, in order, from:

1. ``ViewPosition`` (0018,5101): ``PA``, ``AP``, ``LL``/``RL``/``LAT``/``LATERAL``;
2. ``ViewCodeSequence`` (0054,0220), SNOMED CT or legacy SNOMED-RT codes of DICOM CID 4010
   (postero-anterior, antero-posterior, left/right/plain lateral);
3. as a last resort the series/image descriptions (``SeriesDescription``, ``ProtocolName``,
   ``AcquisitionDeviceProcessingDescription``, ``ImageComments``): the first of them that names
   exactly one view wins; a text naming two views ("PA AND LAT") is skipped.

Anything else is ``UNKNOWN``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_io.errors import DicomIOError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

PA, AP, LATERAL, UNKNOWN = "PA", "AP", "LATERAL", "UNKNOWN"
VIEWS = (PA, AP, LATERAL, UNKNOWN)

_VIEW_POSITION = {"PA": PA, "AP": AP, "LL": LATERAL, "RL": LATERAL, "LAT": LATERAL, "LATERAL": LATERAL,
                  "LLAT": LATERAL, "RLAT": LATERAL}
# DICOM CID 4010 (DX View): SNOMED CT ids and their legacy SNOMED-RT (SRT) equivalents.
_VIEW_CODES = {
    "272479007": PA, "R-10214": PA,                                  # postero-anterior
    "399348003": AP, "R-10206": AP,                                  # antero-posterior
    "399173006": LATERAL, "R-10236": LATERAL,                        # left lateral
    "399198007": LATERAL, "R-10232": LATERAL,                        # right lateral
    "399067008": LATERAL, "R-102CD": LATERAL,                        # lateral
}
_VIEW_PATTERNS = {
    PA: re.compile(r"\b(PA|POSTERO[\s-]?ANTERIOR)\b"),
    AP: re.compile(r"\b(AP|ANTERO[\s-]?POSTERIOR)\b"),
    LATERAL: re.compile(r"\b(LAT|LATERAL|LL|RL|LLAT|RLAT)\b"),
}
_DOTTED = re.compile(r"\b([AP])\.\s?([AP])\.?")
_DESCRIPTION_KEYWORDS = ("SeriesDescription", "ProtocolName", "AcquisitionDeviceProcessingDescription",
                         "ImageComments")


class DuplicateInstance(DicomIOError):
    """Two files carry the same SOP Instance UID; one is kept, the other is quarantined."""

    code = "duplicate"


class MissingUID(DicomIOError):
    """The file lacks a Study, Series or SOP Instance UID, so it cannot be placed in a study."""

    code = "missing_uid"


@dataclass(frozen=True)
class ImageMeta:
    """PHI-free metadata of one image (one frame of one instance)."""

    source_path: str
    """Absolute path of the file the image came from."""
    study_uid: str
    """Study Instance UID (for PNG/JPEG: a UID derived from the file content)."""
    series_uid: str
    """Series Instance UID."""
    sop_uid: str
    """SOP Instance UID; unique per file."""
    modality: str | None = None
    """DICOM Modality (CR, DX, CT ...); None when absent or not DICOM."""
    body_part: str | None = None
    """BodyPartExamined, upper case; None when absent."""
    view_position: str | None = None
    """The raw ViewPosition value, upper case; None when absent."""
    view: str = UNKNOWN
    """Normalised view: PA, AP, LATERAL or UNKNOWN (see the module docstring for the rule)."""
    laterality: str | None = None
    """ImageLaterality (or Laterality): R, L, B or U; None when absent."""
    photometric_interpretation: str | None = None
    """MONOCHROME1, MONOCHROME2, RGB ... as stored (before our normalisation)."""
    pixel_spacing: tuple[float, float] | None = None
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing; None when absent."""
    original_shape: tuple[int, int] = (0, 0)
    """(rows, columns) of the stored image before any resizing."""
    transfer_syntax: str | None = None
    """Transfer Syntax UID of the file; None for PNG/JPEG."""
    number_of_frames: int = 1
    """Frames in the instance; only `frame_index` is returned by the readers."""
    frame_index: int = 0
    """Which frame the pixels came from (multi-frame: the first by default)."""
    series_number: int | None = None
    """SeriesNumber, used only to order series."""
    instance_number: int | None = None
    """InstanceNumber, used only to order images."""
    window: str | None = None
    """The intensity rule that was applied: voi_lut, window, percentile or minmax."""
    decoder: str = "pydicom"
    """Who decoded the pixels: pydicom, simpleitk or pillow."""
    has_dicom_metadata: bool = True
    """False for plain PNG/JPEG images, whose UIDs are synthetic and whose view is UNKNOWN."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key in ("pixel_spacing", "original_shape"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageMeta:
        """Inverse of `to_dict`; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("pixel_spacing", "original_shape"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    if not isinstance(value, str | bytes):  # multi-valued: join
        value = "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    value = value.strip()
    return value or None


def view_from_text(text: str | None) -> str:
    """The single view a free text names (PA, AP, LATERAL), or UNKNOWN when none or several."""
    if not text:
        return UNKNOWN
    upper = _DOTTED.sub(r"\1\2", text.upper())  # "P.A." -> "PA"
    found = [view for view, pattern in _VIEW_PATTERNS.items() if pattern.search(upper)]
    return found[0] if len(found) == 1 else UNKNOWN


def view_from_dataset(ds: Dataset) -> str:
    """Normalised view of a dataset: ViewPosition, then ViewCodeSequence, then descriptions.

    Args:
        ds: a pydicom dataset (header only is enough).

    Returns:
        One of PA, AP, LATERAL, UNKNOWN.
    """
    position = (_text(ds, "ViewPosition") or "").upper()
    if position in _VIEW_POSITION:
        return _VIEW_POSITION[position]
    for item in ds.get("ViewCodeSequence") or []:
        code = str(item.get("CodeValue", "") or "").strip()
        if code in _VIEW_CODES:
            return _VIEW_CODES[code]
    for keyword in _DESCRIPTION_KEYWORDS:
        view = view_from_text(_text(ds, keyword))
        if view != UNKNOWN:
            return view
    return UNKNOWN


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def meta_from_dataset(ds: Dataset, path: str | Path | None) -> ImageMeta:
    """Build PHI-free `ImageMeta` from a dataset header (pixels are not decoded).

    Args:
        ds: the dataset.
        path: its file; stored absolute in `source_path`.

    Returns:
        The metadata; missing UIDs are empty strings (the caller decides whether that is fatal).
    """
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    pixel_spacing = None
    if spacing is not None:
        try:
            values = [float(v) for v in spacing]
            if len(values) == 2:
                pixel_spacing = (values[0], values[1])
        except (TypeError, ValueError):
            pixel_spacing = None
    file_meta = getattr(ds, "file_meta", None)
    tsyntax = str(file_meta.get("TransferSyntaxUID")) if file_meta is not None and \
        file_meta.get("TransferSyntaxUID") is not None else None
    body_part = _text(ds, "BodyPartExamined")
    modality = _text(ds, "Modality")
    return ImageMeta(
        source_path=str(Path(path).resolve()) if path is not None else "",
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
        modality=modality.upper() if modality else None,
        body_part=body_part.upper() if body_part else None,
        view_position=(_text(ds, "ViewPosition") or "").upper() or None,
        view=view_from_dataset(ds),
        laterality=(_text(ds, "ImageLaterality") or _text(ds, "Laterality") or "").upper() or None,
        photometric_interpretation=_text(ds, "PhotometricInterpretation"),
        pixel_spacing=pixel_spacing,
        original_shape=(_int_or_none(ds.get("Rows")) or 0, _int_or_none(ds.get("Columns")) or 0),
        transfer_syntax=tsyntax,
        number_of_frames=_int_or_none(ds.get("NumberOfFrames")) or 1,
        series_number=_int_or_none(ds.get("SeriesNumber")),
        instance_number=_int_or_none(ds.get("InstanceNumber")),
    )


@dataclass(frozen=True)
class Series:
    """One series of a study: its images in instance order."""

    series_uid: str
    """Series Instance UID."""
    modality: str | None
    """Modality shared by the images (of the first image if they disagree)."""
    images: tuple[ImageMeta, ...] = field(default_factory=tuple)
    """The images, ordered by InstanceNumber then SOP Instance UID."""

    def to_dict(self, root: str | Path | None = None) -> dict[str, Any]:
        """JSON-ready dict; with `root`, each image also gets its `relative_path` to it."""
        return {"series_uid": self.series_uid, "modality": self.modality,
                "images": [_image_record(meta, root) for meta in self.images]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Series:
        """Inverse of `to_dict`."""
        return cls(series_uid=data["series_uid"], modality=data.get("modality"),
                   images=tuple(ImageMeta.from_dict(img["meta"]) for img in data.get("images", [])))


@dataclass(frozen=True)
class Study:
    """One study: its series (each with its images)."""

    study_uid: str
    """Study Instance UID."""
    series: tuple[Series, ...] = field(default_factory=tuple)
    """The series, ordered by SeriesNumber then Series Instance UID."""

    @property
    def images(self) -> tuple[ImageMeta, ...]:
        """All images of the study, series by series."""
        return tuple(img for s in self.series for img in s.images)

    @property
    def views(self) -> tuple[str, ...]:
        """The view of each image, in `images` order."""
        return tuple(img.view for img in self.images)

    def to_dict(self, root: str | Path | None = None) -> dict[str, Any]:
        """JSON-ready dict; with `root`, each image also gets its `relative_path` to it."""
        return {"study_uid": self.study_uid, "views": list(self.views),
                "series": [s.to_dict(root) for s in self.series]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Study:
        """Inverse of `to_dict`."""
        return cls(study_uid=data["study_uid"],
                   series=tuple(Series.from_dict(s) for s in data.get("series", [])))


def _image_record(meta: ImageMeta, root: str | Path | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "sop_uid": meta.sop_uid, "series_uid": meta.series_uid, "study_uid": meta.study_uid,
        "view": meta.view, "modality": meta.modality, "shape": list(meta.original_shape),
        "source_path": meta.source_path,
    }
    if root is not None:
        try:
            record["relative_path"] = Path(meta.source_path).relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            record["relative_path"] = None
    record["meta"] = meta.to_dict()
    return record


def _order(value: int | None) -> tuple[int, int]:
    return (0, value) if value is not None else (1, 0)


def group_studies(metas: Iterable[ImageMeta]) -> list[Study]:
    """Group images into studies → series, deterministically ordered.

    Args:
        metas: image metadata, in any order.

    Returns:
        Studies sorted by study UID; series by (SeriesNumber, UID); images by (InstanceNumber, UID).

    Raises:
        DuplicateInstance: two images share a SOP Instance UID (de-duplicate before grouping).
    """
    seen: dict[str, str] = {}
    tree: dict[str, dict[str, list[ImageMeta]]] = {}
    for meta in metas:
        if meta.sop_uid in seen:
            raise DuplicateInstance(meta.source_path, f"SOP Instance UID already read from {seen[meta.sop_uid]}",
                                    "remove the duplicate file")
        seen[meta.sop_uid] = meta.source_path
        tree.setdefault(meta.study_uid, {}).setdefault(meta.series_uid, []).append(meta)
    studies = []
    for study_uid in sorted(tree):
        series = []
        for series_uid, images in tree[study_uid].items():
            images.sort(key=lambda m: (_order(m.instance_number), m.sop_uid))
            series.append(Series(series_uid=series_uid, modality=images[0].modality, images=tuple(images)))
        series.sort(key=lambda s: (_order(s.images[0].series_number), s.series_uid))
        studies.append(Study(study_uid=study_uid, series=tuple(series)))
    return studies
