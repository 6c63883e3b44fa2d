"""DICOM SR writer for signed (or draft) reports, with highdicom.

The document is a Comprehensive SR whose content tree follows DICOM TID 2000 "Basic Diagnostic
Imaging Report":

    CONTAINER (18748-4, LN, "Diagnostic Imaging Report")
      CONTAINS CONTAINER (121070, DCM, "Findings")
        CONTAINS TEXT (121071, DCM, "Finding")            = findings text
      CONTAINS CONTAINER (121072, DCM, "Impressions")
        CONTAINS TEXT (121073, DCM, "Impression")         = impression text

The SR goes back into the hospital's own PACS, into the source study: it carries the source's
StudyInstanceUID and its Patient and General Study modules (patient identity must be there for
the PACS to file it). Those values are never logged nor put into exception messages.

Series and SOP Instance UIDs, and every date/time in the document, come from the signed version
(its hash and signing time), so sending the same signed version twice gives the same instance and
the PACS keeps one copy; a new signed version gets new UIDs.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_io.errors import DicomIOError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# (value, scheme, meaning) of the concepts of TID 2000 used here.
REPORT_TITLE = ("18748-4", "LN", "Diagnostic Imaging Report")
FINDINGS_SECTION = ("121070", "DCM", "Findings")
FINDING = ("121071", "DCM", "Finding")
IMPRESSIONS_SECTION = ("121072", "DCM", "Impressions")
IMPRESSION = ("121073", "DCM", "Impression")
SR_SERIES_NUMBER = 9001
"""High series number so the SR sorts after the images in a PACS viewer."""
_CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
# Type 2 attributes highdicom reads from the first evidence data set (it fails if one is absent).
_TYPE2_STUDY = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")


class ReportContentError(DicomIOError):
    """The report cannot be written as SR: no text, no study UID, mixed studies, bad observer."""

    code = "bad_report"


def sr_uids(version_hash: str) -> tuple[str, str]:
    """(series_uid, sop_uid) of the SR of one signed version, derived from its hash only."""
    from pydicom.uid import generate_uid

    if not version_hash:
        raise ReportContentError(None, "empty version hash", "pass the signed version's hash")
    return (str(generate_uid(entropy_srcs=[version_hash, "sr-series"])),
            str(generate_uid(entropy_srcs=[version_hash, "sr-instance"])))


def _code(triple: tuple[str, str, str]) -> Any:
    from highdicom.sr import CodedConcept

    value, scheme, meaning = triple
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _without_pixels(ds: Dataset) -> Dataset:
    """A copy of the header (no pixel data) with missing Type 2 study attributes set empty."""
    from pydicom.dataset import Dataset

    out = Dataset()
    for elem in ds:
        if elem.tag.group in (0x7FE0, 0xFFFA) or elem.tag.is_private:
            continue
        out.add(copy.deepcopy(elem))
    for keyword in _TYPE2_STUDY:
        if keyword not in out:
            setattr(out, keyword, "")
    return out


def _evidence(source: Dataset | Sequence[Dataset | str | Path] | Mapping[str, Any],
              version_hash: str) -> tuple[list[Dataset], bool]:
    """Source headers as highdicom evidence; True when they reference real instances."""
    import pydicom
    from pydicom.dataset import Dataset

    if isinstance(source, Dataset):
        items: list[Any] = [source]
    elif isinstance(source, Mapping):
        # Study information only: a stub instance carries patient/study data; its evidence
        # reference is removed after building (it points at no real instance).
        stub = Dataset()
        for keyword, value in source.items():
            setattr(stub, keyword, value)
        stub.SOPClassUID = _CR_STORAGE
        stub.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[version_hash, "stub-sop"])
        stub.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[version_hash, "stub-series"])
        items = [stub]
    else:
        items = list(source)
    if not items:
        raise ReportContentError(None, "no source data set given", "pass the study's DICOM headers or files")
    headers = []
    for item in items:
        if isinstance(item, str | Path):
            try:
                item = pydicom.dcmread(item, stop_before_pixels=True)
            except Exception as exc:  # noqa: BLE001 - any read failure is one typed error
                raise ReportContentError(item, f"cannot read source header ({type(exc).__name__})",
                                         "pass readable DICOM files of the study") from exc
        headers.append(_without_pixels(item))
    studies = {str(h.get("StudyInstanceUID", "") or "") for h in headers}
    if "" in studies:
        raise ReportContentError(None, "a source data set has no StudyInstanceUID",
                                 "pass headers of the study the report belongs to")
    if len(studies) > 1:
        raise ReportContentError(None, f"sources span {len(studies)} studies",
                                 "build one SR per study")
    return headers, not isinstance(source, Mapping)


def _person_name(name: str) -> str:
    """A DICOM PN value: ``Family^Given``; a bare name becomes the family component."""
    name = name.strip()
    if not name:
        raise ReportContentError(None, "empty verifying observer name", "pass the signing radiologist's name")
    return name if "^" in name else f"{name}^"


def build_report_sr(source: Dataset | Sequence[Dataset | str | Path] | Mapping[str, Any],
                    findings: str, impression: str, *, verifying_observer: str | None, verified: bool,
                    signed_at: dt.datetime, version_hash: str, institution: str | None = None,
                    verifying_organization: str | None = None, manufacturer: str = "medvlm",
                    series_description: str = "Report (AI-drafted, radiologist-reviewed)") -> Dataset:
    """Build a Comprehensive SR (TID 2000) with the report's FINDINGS and IMPRESSION texts.

    Args:
        source: the source study: one or more DICOM headers (`Dataset`s or file paths; all from one
            study; each is recorded as evidence), or a mapping of study information keywords
            (``StudyInstanceUID`` required; ``PatientID``, ``PatientName``, ``AccessionNumber`` ...).
        findings: FINDINGS text (may be empty when there is an impression).
        impression: IMPRESSION text (may be empty when there are findings).
        verifying_observer: the signing radiologist (``Family^Given``); required when `verified`.
        verified: True for a signed report: VerificationFlag VERIFIED, CompletionFlag COMPLETE,
            PreliminaryFlag FINAL and a VerifyingObserverSequence; False for a draft: UNVERIFIED,
            PARTIAL, PRELIMINARY.
        signed_at: signing (or drafting) time; used for content, creation and verification
            date/times so the same version always gives the same document.
        version_hash: hash of the signed version; the SR's Series and SOP Instance UIDs derive
            from it (see `sr_uids`).
        institution: InstitutionName of the document creator (optional).
        verifying_organization: organisation of the verifier; defaults to `institution`, else
            ``"UNKNOWN"`` (highdicom requires one when verified).
        manufacturer: Manufacturer of the creating software.
        series_description: SeriesDescription of the SR series.

    Returns:
        The SR as a `pydicom.Dataset` (a `highdicom.sr.ComprehensiveSR`), Explicit VR Little Endian,
        with file meta, ready to save or send.

    Raises:
        ReportContentError: no text, no/mixed study, missing observer for a signed report.
    """
    import highdicom as hd
    from highdicom.sr import ContainerContentItem, RelationshipTypeValues, TextContentItem

    findings, impression = (findings or "").strip(), (impression or "").strip()
    if not findings and not impression:
        raise ReportContentError(None, "the report has neither findings nor impression",
                                 "write at least one section before building the SR")
    if verified and not (verifying_observer or "").strip():
        raise ReportContentError(None, "a signed report needs a verifying observer",
                                 "pass verifying_observer='Family^Given'")
    evidence, real_evidence = _evidence(source, version_hash)
    series_uid, sop_uid = sr_uids(version_hash)

    contains = RelationshipTypeValues.CONTAINS
    root = ContainerContentItem(name=_code(REPORT_TITLE), template_id="2000")
    sections = []
    for section, item, text in ((FINDINGS_SECTION, FINDING, findings),
                                (IMPRESSIONS_SECTION, IMPRESSION, impression)):
        if not text:
            continue  # TextValue is Type 1: an empty section is left out, not written empty
        container = ContainerContentItem(name=_code(section), relationship_type=contains)
        container.ContentSequence = [TextContentItem(name=_code(item), value=text, relationship_type=contains)]
        sections.append(container)
    root.ContentSequence = sections

    observer = _person_name(verifying_observer) if verified else None
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence, content=root, series_instance_uid=series_uid, series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_uid, instance_number=1, manufacturer=manufacturer,
        is_complete=verified, is_final=verified, is_verified=verified,
        institution_name=institution, verifying_observer_name=observer,
        verifying_organization=(verifying_organization or institution or "UNKNOWN") if verified else None,
        series_description=series_description,
        # UTF-8: report text may hold any character; copied patient names are re-encoded from str.
        specific_character_set="ISO_IR 192",
        content_date=signed_at.date(), content_time=signed_at.time().replace(tzinfo=None),
        series_date=signed_at.date(), series_time=signed_at.time().replace(tzinfo=None),
    )
    # highdicom stamps "now" here; the signing time keeps a resend byte-identical.
    sr.InstanceCreationDate = signed_at.strftime("%Y%m%d")
    sr.InstanceCreationTime = signed_at.strftime("%H%M%S")
    for equipment in sr.get("ContributingEquipmentSequence") or []:
        if "ContributionDateTime" in equipment:
            equipment.ContributionDateTime = signed_at.strftime("%Y%m%d%H%M%S%z")
    if verified:
        # DICOM DT: YYYYMMDDHHMMSS, with the +hhmm offset when the time is zone-aware.
        sr.VerifyingObserverSequence[0].VerificationDateTime = signed_at.strftime("%Y%m%d%H%M%S%z")
    if not real_evidence:
        for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
            if keyword in sr:
                delattr(sr, keyword)
    return sr


def read_report_texts(ds: Dataset) -> dict[str, str]:
    """FINDINGS and IMPRESSION texts of an SR written by `build_report_sr` (or any TID 2000 SR).

    Args:
        ds: the SR data set (as read back from a PACS or file).

    Returns:
        ``{"findings": ..., "impression": ...}``; a missing section is ``""``; several TEXT items
        of one kind are joined with a newline.
    """
    found: dict[str, list[str]] = {"findings": [], "impression": []}
    wanted = {(FINDING[0], FINDING[1]): "findings", (IMPRESSION[0], IMPRESSION[1]): "impression"}

    def walk(items: Any) -> None:
        for item in items or []:
            names = item.get("ConceptNameCodeSequence") or []
            if item.get("ValueType") == "TEXT" and names:
                key = wanted.get((str(names[0].CodeValue), str(names[0].CodingSchemeDesignator)))
                if key:
                    found[key].append(str(item.get("TextValue", "")))
            walk(item.get("ContentSequence"))

    walk(ds.get("ContentSequence"))
    return {key: "\n".join(values) for key, values in found.items()}
