"""Sending reports back to the PACS after sign-off: DIMSE C-STORE and DICOMweb STOW-RS.

Both send one data set (typically the SR from `dicom_io.sr.build_report_sr`) and raise a typed
`PacsError` on failure, naming the peer and the step, never patient data. Resending the same
signed version is safe: its SOP Instance UID is the same, so the PACS keeps one instance.

Deadlines: ``connect_timeout_s`` bounds opening the connection; ``timeout_s`` bounds the whole
send of one instance (association + store, or every STOW-RS attempt together), so a PACS that
accepts the connection and never answers costs at most ``timeout_s`` and raises `PacsTimeout`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dicom_io.sources import PacsRefused, PacsUnreachable

if TYPE_CHECKING:
    import requests
    from pydicom.dataset import Dataset

_OK = 0x0000
_WARNINGS = (0x0001, 0xB000, 0xB006, 0xB007)  # coercion / elements discarded: stored anyway


DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_SEND_TIMEOUT_S = 30.0


class PacsTimeout(PacsUnreachable):
    """The peer accepted the connection but did not answer within the deadline."""

    code = "pacs_timeout"


def _timed_out(peer: str, step: str, timeout_s: float) -> PacsTimeout:
    return PacsTimeout(peer, f"{step}: no answer within {timeout_s:g} s",
                       "check that the PACS is healthy, or raise the send timeout")


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(uid) if uid else "1.2.840.10008.1.2.1"  # Explicit VR Little Endian


def send_cstore(ds: Dataset, host: str, port: int, called_aet: str, calling_aet: str = "MEDVLM", *,
                timeout_s: float = DEFAULT_SEND_TIMEOUT_S, connect_timeout_s: float | None = None) -> int:
    """C-STORE one data set, proposing its own SOP class and transfer syntax.

    Args:
        ds: the data set (needs SOPClassUID, SOPInstanceUID; file meta optional).
        host: PACS address.
        port: PACS DICOM port.
        called_aet: the PACS's AE title.
        calling_aet: our AE title.
        timeout_s: deadline of the whole send (association, C-STORE response, release), in seconds.
        connect_timeout_s: TCP connect timeout; default min(10, ``timeout_s``).

    Returns:
        The DIMSE status (0x0000, or a warning status the PACS stored with).

    Raises:
        PacsTimeout: the PACS took the connection but did not answer within ``timeout_s``.
        PacsUnreachable: no association (peer down, wrong port).
        PacsRefused: association rejected/aborted, context not accepted, or a failure status.
    """
    from pynetdicom import AE

    from dicom_io.dimse import association_error

    peer = f"{host}:{port}"
    ts = _transfer_syntax(ds)
    start = time.monotonic()
    ae = AE(ae_title=calling_aet)
    ae.connection_timeout = min(DEFAULT_CONNECT_TIMEOUT_S if connect_timeout_s is None else connect_timeout_s,
                                timeout_s)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    # Explicit VR LE as a fallback context: most PACS accept it for any non-compressed data set.
    ae.add_requested_context(str(ds.SOPClassUID), [ts] if ts == "1.2.840.10008.1.2.1"
                             else [ts, "1.2.840.10008.1.2.1"])
    assoc = ae.associate(host, int(port), ae_title=called_aet)
    if not assoc.is_established:
        if time.monotonic() - start >= 0.9 * timeout_s:
            raise _timed_out(peer, "C-STORE association", timeout_s)
        raise association_error(assoc, host, int(port), called_aet, calling_aet, "C-STORE", timeout_s)
    # what is left of the deadline bounds the response; pynetdicom reads it per message
    assoc.dimse_timeout = max(0.1, timeout_s - (time.monotonic() - start))
    try:
        try:
            status = assoc.send_c_store(ds)
        except ValueError as exc:  # no accepted presentation context for this SOP class / syntax
            raise PacsRefused(peer, "C-STORE: the PACS accepted no presentation context for this SOP class "
                              "and transfer syntax", "check the PACS's accepted SOP classes") from exc
    finally:
        if assoc.is_established:
            assoc.release()
    code = status.get("Status") if status is not None else None
    if code is None:
        if time.monotonic() - start >= 0.9 * timeout_s:
            raise _timed_out(peer, "C-STORE", timeout_s)
        raise PacsRefused(peer, "C-STORE: no response (aborted)", "see the PACS log")
    code = int(code)
    if code != _OK and code not in _WARNINGS:
        raise PacsRefused(peer, f"C-STORE failed with status 0x{code:04X}", "see the PACS log")
    return code


def send_stow(ds: Dataset, url: str, *, timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
              connect_timeout_s: float | None = None, session: requests.Session | None = None,
              headers: dict[str, str] | None = None, max_attempts: int = 3) -> Any:
    """STOW-RS one data set to a DICOMweb root (dicomweb-client ``store_instances``).

    Args:
        ds: the data set (with file meta, as `build_report_sr` returns it).
        url: DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        timeout_s: deadline of the whole send, every attempt included, in seconds.
        connect_timeout_s: TCP connect timeout per attempt; default min(10, ``timeout_s``).
        session: a prepared `requests.Session` (authentication), optional.
        headers: extra HTTP headers, optional.
        max_attempts: tries while the deadline allows, after a refused connection or HTTP
            408/429/503/504 (a retried STOW of the same SR is harmless: same SOP Instance UID).

    Returns:
        The STOW-RS response data set (ReferencedSOPSequence / FailedSOPSequence).

    Raises:
        PacsTimeout: the server took the connection but did not answer within the deadline.
        PacsUnreachable: connection failed.
        PacsRefused: HTTP error, or the response lists the instance as failed.
    """
    import requests

    from dicom_io.dicomweb import build_client, wrap_http_error

    root = url.rstrip("/")
    connect = DEFAULT_CONNECT_TIMEOUT_S if connect_timeout_s is None else connect_timeout_s
    deadline = time.monotonic() + timeout_s
    for attempt in range(1, max(1, max_attempts) + 1):
        left = deadline - time.monotonic()
        client = build_client(root, timeout_s=max(0.1, left), connect_timeout_s=min(connect, max(0.1, left)),
                              session=session, headers=headers, max_attempts=1)
        try:
            response = client.store_instances([ds])
            break
        except requests.exceptions.ReadTimeout as exc:
            raise _timed_out(root, "STOW-RS store", timeout_s) from exc
        except Exception as exc:  # requests and dicomweb-client raise many types
            error = wrap_http_error(exc, root, "STOW-RS store")
            status = getattr(getattr(exc, "response", None), "status_code", None)
            retriable = isinstance(exc, requests.exceptions.ConnectionError) or status in (408, 429, 503, 504)
            pause = 0.25 * 2 ** (attempt - 1)
            if not retriable or attempt >= max_attempts or time.monotonic() + pause >= deadline:
                raise error from exc
            time.sleep(pause)
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reason = failed[0].get("FailureReason")
        raise PacsRefused(root, f"STOW-RS: instance refused (FailureReason {reason})", "see the PACS log")
    return response
