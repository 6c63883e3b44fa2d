"""Sending reports back to the PACS after sign-off: DIMSE C-STORE and DICOMweb STOW-RS.

Both send one data set (typically the SR from `dicom_io.sr.build_report_sr`) and raise a typed
`PacsError` on failure, naming the peer and the step, never patient data. Resending the same
signed version is safe: its SOP Instance UID is the same, so the PACS keeps one instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dicom_io.sources import PacsRefused

if TYPE_CHECKING:
    import requests
    from pydicom.dataset import Dataset

_OK = 0x0000
_WARNINGS = (0x0001, 0xB000, 0xB006, 0xB007)  # coercion / elements discarded: stored anyway


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(uid) if uid else "1.2.840.10008.1.2.1"  # Explicit VR Little Endian


def send_cstore(ds: Dataset, host: str, port: int, called_aet: str, calling_aet: str = "MEDVLM", *,
                timeout_s: float = 30.0) -> int:
    """C-STORE one data set, proposing its own SOP class and transfer syntax.

    Args:
        ds: the data set (needs SOPClassUID, SOPInstanceUID; file meta optional).
        host: PACS address.
        port: PACS DICOM port.
        called_aet: the PACS's AE title.
        calling_aet: our AE title.
        timeout_s: ACSE/DIMSE/network/connect timeout in seconds.

    Returns:
        The DIMSE status (0x0000, or a warning status the PACS stored with).

    Raises:
        PacsUnreachable: no association (peer down, wrong port, timeout).
        PacsRefused: association rejected/aborted, context not accepted, or a failure status.
    """
    from pynetdicom import AE

    from dicom_io.dimse import association_error

    peer = f"{host}:{port}"
    ts = _transfer_syntax(ds)
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    # Explicit VR LE as a fallback context: most PACS accept it for any non-compressed data set.
    ae.add_requested_context(str(ds.SOPClassUID), [ts] if ts == "1.2.840.10008.1.2.1"
                             else [ts, "1.2.840.10008.1.2.1"])
    assoc = ae.associate(host, int(port), ae_title=called_aet)
    if not assoc.is_established:
        raise association_error(assoc, host, int(port), called_aet, calling_aet, "C-STORE", timeout_s)
    try:
        try:
            status = assoc.send_c_store(ds)
        except ValueError as exc:  # no accepted presentation context for this SOP class / syntax
            raise PacsRefused(peer, "C-STORE: the PACS accepted no presentation context for this SOP class "
                              "and transfer syntax", "check the PACS's accepted SOP classes") from exc
    finally:
        assoc.release()
    code = status.get("Status") if status is not None else None
    if code is None:
        raise PacsRefused(peer, "C-STORE: no response (aborted or timed out)", "see the PACS log")
    code = int(code)
    if code != _OK and code not in _WARNINGS:
        raise PacsRefused(peer, f"C-STORE failed with status 0x{code:04X}", "see the PACS log")
    return code


def send_stow(ds: Dataset, url: str, *, timeout_s: float = 30.0, session: requests.Session | None = None,
              headers: dict[str, str] | None = None, max_attempts: int = 3) -> Any:
    """STOW-RS one data set to a DICOMweb root (dicomweb-client ``store_instances``).

    Args:
        ds: the data set (with file meta, as `build_report_sr` returns it).
        url: DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        timeout_s: per-request read timeout.
        session: a prepared `requests.Session` (authentication), optional.
        headers: extra HTTP headers, optional.
        max_attempts: tries (a retried STOW of the same SR is harmless: same SOP Instance UID).

    Returns:
        The STOW-RS response data set (ReferencedSOPSequence / FailedSOPSequence).

    Raises:
        PacsUnreachable: connection failed or timed out.
        PacsRefused: HTTP error, or the response lists the instance as failed.
    """
    from dicom_io.dicomweb import build_client, wrap_http_error

    client = build_client(url, timeout_s=timeout_s, session=session, headers=headers, max_attempts=max_attempts)
    try:
        response = client.store_instances([ds])
    except Exception as exc:  # requests and dicomweb-client raise many types
        raise wrap_http_error(exc, url.rstrip("/"), "STOW-RS store") from exc
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reason = failed[0].get("FailureReason")
        raise PacsRefused(url.rstrip("/"), f"STOW-RS: instance refused (FailureReason {reason})",
                          "see the PACS log")
    return response
