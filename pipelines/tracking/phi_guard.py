"""The PHI guard on everything bound for tracking: params, tags and artifacts.

Policy (decided: **fail loudly**). Nothing patient-identifying may reach params, tags or
artifacts. ``scrub_for_tracking`` refuses a mapping that holds a PHI-like key (patient_name,
patient_id, birth_date, accession, mrn, ...) with a non-boolean value, or any string that looks like
a DICOM person name (``FAMILY^GIVEN``); it raises ``PHIInTrackingError`` naming the key path (never
the value) *before* anything is written, so a refused run leaves no trace in the store. Records
that carry PHI (for example a data manifest) never go to the tracker as such: only
``data_manifest_hash(records)`` (``pipelines.tracking.provenance``) does, which is one-way.
The patterns are the project's one set, from ``compliance.phi``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from compliance.phi import find_phi, has_person_name
from pipelines.errors import PipelineError


class PHIInTrackingError(PipelineError, ValueError):
    """A value bound for tracking looks like PHI; the message names the key path, never the value."""


text_looks_like_phi = has_person_name  # the one PN pattern, from compliance.phi


def scrub_for_tracking(mapping: Mapping[str, Any], *, where: str = "tracking data") -> dict[str, Any]:
    """Refuse PHI bound for params, tags or artifacts.

    Args:
        mapping: a config, tag set or dict artifact (nested mappings and lists are walked).
        where: what the mapping is, for the error message.

    Returns:
        A plain-dict copy of ``mapping`` when it is clean.

    Raises:
        PHIInTrackingError: a PHI-like key holds a value (booleans and None are allowed, so flags
            such as ``keep_patient_id: false`` pass), or a string looks like a DICOM person name.
            The message lists key paths only.
    """
    problems = find_phi(mapping)
    if problems:
        raise PHIInTrackingError(
            f"refused to track {where}: possible PHI at {', '.join(problems)}; "
            "remove these values or track a hash of them (data_manifest_hash)"
        )
    return json.loads(json.dumps(mapping, default=str))
