"""The one set of PHI patterns: what a value bound for tracking or the audit log must not look like.

Used by the MLflow guard (`pipelines.tracking.tracker`) and the audit log (`compliance.audit`), so
both refuse the same things. Patterns are deliberately conservative: a refusal names the key path,
never the value.
"""

from __future__ import annotations

import re

# Keys are compared after lower-casing and dropping everything but letters and digits.
PHI_KEY_RE = re.compile(
    r"patient(name|id|ids|birth|address|phone|telephone|mothersmaidenname)"
    r"|otherpatient|birthdate|dateofbirth|^dob$|accession|^mrn$|medicalrecord|^ssn$|socialsecurity"
    r"|physicianname|operatorname|performingphysician"
)
# A DICOM person name (PN): FAMILY^GIVEN[^MIDDLE...], anywhere in a string.
PERSON_NAME_RE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z][A-Za-z'\-]*\^[A-Za-z]")
# A DICOM UID: dotted digits with at least four components, e.g. 1.2.840.113619...
DICOM_UID_RE = re.compile(r"^\d+(\.\d+){3,}$")


def is_phi_key(key: str) -> bool:
    """Whether a mapping key names a PHI attribute (``PatientName``, ``patient_id``, ``MRN`` ...)."""
    return bool(PHI_KEY_RE.search(re.sub(r"[^a-z0-9]", "", key.lower())))


def has_person_name(text: str) -> bool:
    """Whether ``text`` holds a DICOM person-name pattern (``FAMILY^GIVEN``) anywhere."""
    return bool(PERSON_NAME_RE.search(text))


def is_dicom_uid(text: str) -> bool:
    """Whether ``text`` is a whole DICOM UID (a study UID must travel as a pseudonym)."""
    return bool(DICOM_UID_RE.match(text))
