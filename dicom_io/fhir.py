"""FHIR R4 DiagnosticReport JSON for a (signed or draft) chest radiograph report.

Choices, so a receiving system knows what to expect:

* ``code`` is LOINC **18748-4 "Diagnostic imaging study"**, the generic imaging-report code, not
  36643-5 ("XR Chest 2 Views"): our studies have one *or more* views, and the specific chest codes
  fix the view count. The same code titles the DICOM SR (`dicom_io.sr`).
* ``category`` is HL7 v2-0074 ``RAD`` (radiology).
* ``status`` is ``final`` for a signed report, ``preliminary`` for an unsigned draft.
* ``identifier`` carries the signed version's hash (system `VERSION_SYSTEM`), so a resend of the
  same version can be recognised as the same report.
* ``imagingStudy`` refers to the study by its Study Instance UID as a logical reference (an
  identifier ``urn:oid:<uid>`` in system ``urn:dicom:uid``): the ImagingStudy resource id on the
  receiving FHIR server is unknown to us.
* ``conclusion`` is the impression; ``presentedForm`` holds the whole text (FINDINGS and
  IMPRESSION) as base64 ``text/plain; charset=utf-8``.

Plain dictionaries only (``json.dumps`` ready); no FHIR library is needed.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from dicom_io.sr import ReportContentError

LOINC = "http://loinc.org"
REPORT_CODE = {"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}
CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
VERSION_SYSTEM = "urn:medvlm:report-version"
DICOM_UID_SYSTEM = "urn:dicom:uid"


def _instant(value: dt.datetime) -> str:
    """FHIR ``instant``: seconds precision and a time zone (UTC assumed for a naive time)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat(timespec="seconds")


def report_text(findings: str, impression: str) -> str:
    """The human-readable report: ``FINDINGS: ...`` and ``IMPRESSION: ...`` paragraphs."""
    parts = []
    if findings.strip():
        parts.append(f"FINDINGS: {findings.strip()}")
    if impression.strip():
        parts.append(f"IMPRESSION: {impression.strip()}")
    return "\n\n".join(parts)


def build_diagnostic_report(*, study_uid: str, findings: str, impression: str, verified: bool,
                            signed_at: dt.datetime, version_hash: str,
                            verifying_observer: str | None = None, patient_reference: str | None = None,
                            accession_number: str | None = None) -> dict[str, Any]:
    """Build a FHIR R4 DiagnosticReport resource as a JSON-ready dict.

    Args:
        study_uid: Study Instance UID of the source study.
        findings: FINDINGS text.
        impression: IMPRESSION text (also the ``conclusion``).
        verified: True for a signed report (``status: final``), False for a draft (``preliminary``).
        signed_at: signing time (``issued``; naive times are taken as UTC).
        version_hash: hash of the signed version (an ``identifier``).
        verifying_observer: the signing radiologist, DICOM ``Family^Given`` or plain text
            (``resultsInterpreter.display``); required when `verified`.
        patient_reference: FHIR reference to the patient on the receiving server, e.g.
            ``"Patient/123"``; left out when None.
        accession_number: the order's accession number (an ``identifier`` of type ACSN).

    Returns:
        The DiagnosticReport.

    Raises:
        ReportContentError: no text, no study UID, no version hash, or a signed report without observer.
    """
    if not study_uid:
        raise ReportContentError(None, "no study UID", "pass the source study's StudyInstanceUID")
    if not version_hash:
        raise ReportContentError(None, "empty version hash", "pass the signed version's hash")
    text = report_text(findings or "", impression or "")
    if not text:
        raise ReportContentError(None, "the report has neither findings nor impression",
                                 "write at least one section")
    if verified and not (verifying_observer or "").strip():
        raise ReportContentError(None, "a signed report needs a verifying observer",
                                 "pass verifying_observer")
    identifiers: list[dict[str, Any]] = [{"system": VERSION_SYSTEM, "value": version_hash}]
    if accession_number:
        identifiers.append({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "value": accession_number})
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": identifiers,
        "status": "final" if verified else "preliminary",
        "category": [{"coding": [CATEGORY]}],
        "code": {"coding": [REPORT_CODE], "text": "Chest radiograph report"},
        "issued": _instant(signed_at),
        "imagingStudy": [{"type": "ImagingStudy",
                          "identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study_uid}"}}],
        "conclusion": (impression or "").strip(),
        "presentedForm": [{"contentType": "text/plain; charset=utf-8", "language": "en",
                           "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
                           "title": "Radiology report"}],
    }
    if patient_reference:
        report["subject"] = {"reference": patient_reference}
    if verified:
        name = " ".join(part for part in (verifying_observer or "").replace("^", " ").split() if part)
        report["resultsInterpreter"] = [{"display": name}]
    if not report["conclusion"]:
        del report["conclusion"]
    return report
