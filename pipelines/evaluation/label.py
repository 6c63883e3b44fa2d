"""`medvlm label`: reports as JSON lines in, CheXpert labels as JSON objects out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from medvlm.labeler import label_record, labels_as_strings
from pipelines.errors import PipelineError


class LabelInputError(PipelineError, ValueError):
    """A reports line that cannot be labelled (the message names the line, never its text)."""


def run_label(lines: Iterable[str]) -> Iterator[dict]:
    """Label each report line.

    Args:
        lines: JSON lines, each an object with string ``findings`` and/or ``impression`` and an
            optional ``uid``; blank lines are skipped.

    Yields:
        ``{"uid": ..., "labels": {observation: "positive"|"negative"|"uncertain"}, "laterality":
        {observation: "left"|"right"|"bilateral"}}``; observations not mentioned are left out, and
        ``laterality`` holds only the observations whose side the report states.

    Raises:
        LabelInputError: a line that is not a JSON object or has neither ``findings`` nor
            ``impression`` as a string; the message names the line number (never its text).
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LabelInputError(f"line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise LabelInputError(f"line {number}: expected a JSON object, got {type(record).__name__}")
        fields = [k for k in ("findings", "impression") if k in record]
        if not fields:
            raise LabelInputError(f"line {number}: needs a 'findings' or 'impression' field")
        bad = [k for k in fields if record[k] is not None and not isinstance(record[k], str)]
        if bad:
            raise LabelInputError(f"line {number}: field {bad[0]!r} must be a string")
        labels = label_record({k: record[k] or "" for k in fields}) if any(record[k] for k in fields) else {}
        yield {
            "uid": record.get("uid"),
            "labels": labels_as_strings(labels),
            "laterality": {obs: lab.laterality for obs, lab in labels.items() if lab.laterality},
        }
