"""The one set of PHI patterns: what a value bound for tracking or the audit log must not look like.

Used by the MLflow guard (`pipelines.tracking.phi_guard`) and the audit log (`compliance.audit`), so
both refuse the same things. Patterns are deliberately conservative: a refusal names the key path,
never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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


def find_phi(value: Any, path: str = "", *, uids: bool = False) -> list[str]:
    """Walk nested mappings and sequences; the key paths (never the values) that look like PHI.

    Args:
        value: a config, tag set, artifact or audit details.
        path: the name of ``value`` in the messages.
        uids: also refuse strings that are whole DICOM UIDs (the audit log stores pseudonyms only;
            tracking legitimately logs model and data hashes, which are not UIDs either way).

    Returns:
        ``"<path> (<why>)"`` for each problem; empty when clean. A PHI-like key holding a boolean or
        None passes, so flags such as ``keep_patient_id: false`` are allowed.
    """
    problems: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if is_phi_key(str(k)) and not (v is None or isinstance(v, bool)):
                problems.append(f"{sub} (PHI-like key)")
            else:
                problems += find_phi(v, sub, uids=uids)
    elif isinstance(value, list | tuple | set | frozenset):
        for i, v in enumerate(value):
            problems += find_phi(v, f"{path}[{i}]", uids=uids)
    elif isinstance(value, str | bytes):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if has_person_name(text):
            problems.append(f"{path} (DICOM person-name pattern)")
        elif uids and is_dicom_uid(text):
            problems.append(f"{path} (DICOM UID)")
    return problems
