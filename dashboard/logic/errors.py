"""Errors that reach the page: the client sees a typed message and an error id, never a stack trace.

`report_error` writes the error id, the exception's type and where it was raised (file, line,
function of each frame) to the server log, and nothing else: an exception's message or local
values may quote patient data, so they are not logged either.
"""

from __future__ import annotations

import logging
import secrets
import traceback

LOG = logging.getLogger("medvlm.dashboard")


def report_error(exc: BaseException) -> str:
    """Log an unexpected error without PHI and return the id to show the user.

    Args:
        exc: the error raised while rendering a page.

    Returns:
        A short random error id (also in the log line), for the user to quote.
    """
    error_id = secrets.token_hex(6)
    frames = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}"
                       for f in traceback.extract_tb(exc.__traceback__))
    LOG.error("dashboard error %s: %s at %s", error_id, type(exc).__name__, frames or "?")
    return error_id


def error_message(error_id: str) -> str:
    """The page text for an unexpected error (no detail: the log has it under the id)."""
    return (f"Something went wrong and this page could not be shown (error id {error_id}). "
            "Nothing was signed or saved by this step; try again, and give the error id to your administrator.")
