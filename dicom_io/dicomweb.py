"""DICOMweb source: QIDO-RS study search, WADO-RS retrieval into a local work folder.

Uses `dicomweb_client.api.DICOMwebClient` (imported when a source is built). Each instance is
retrieved with ``application/dicom; transfer-syntax=*`` so the file keeps the transfer syntax the
PACS stored (a whole-study retrieve would be transcoded to Explicit VR Little Endian by Orthanc).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_io.sources import (
    CHEST_MODALITIES,
    DICOMWEB,
    FetchedStudy,
    PacsRefused,
    PacsUnreachable,
    dicom_date_range,
    safe_dirname,
)

if TYPE_CHECKING:
    import requests
    from dicomweb_client.api import DICOMwebClient

_STUDY_UID, _SERIES_UID, _SOP_UID = "0020000D", "0020000E", "00080018"


def _value(record: dict[str, Any], tag: str) -> str | None:
    """The first value of a DICOM JSON attribute, or None."""
    values = record.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None


def wrap_http_error(exc: BaseException, url: str, action: str) -> Exception:
    """Turn a requests/dicomweb-client exception into a typed `PacsError` without PHI.

    Args:
        exc: the exception raised by the client.
        url: the service URL (shown in the message).
        action: what was attempted, e.g. ``"QIDO-RS study search"``.

    Returns:
        A `PacsUnreachable` (connection, timeout) or `PacsRefused` (HTTP error status, bad reply).
    """
    import requests

    if isinstance(exc, requests.exceptions.HTTPError):
        status = getattr(exc.response, "status_code", "?")
        hint = {401: "check the credentials", 403: "check the user's permissions",
                404: "check the DICOMweb root in the URL"}.get(status, "see the PACS log")
        return PacsRefused(url, f"{action} failed with HTTP {status}", hint)
    if isinstance(exc, requests.exceptions.Timeout | requests.exceptions.ConnectionError):
        return PacsUnreachable(url, f"{action}: {type(exc).__name__}",
                               "check the URL, that the server runs and the timeout")
    return PacsRefused(url, f"{action}: unexpected reply ({type(exc).__name__})", "see the PACS log")


def build_client(url: str, *, timeout_s: float = 30.0, session: requests.Session | None = None,
                 headers: dict[str, str] | None = None, max_attempts: int = 3,
                 connect_timeout_s: float | None = None) -> DICOMwebClient:
    """A `DICOMwebClient` for `url` with bounded (connect, read) timeouts.

    Args:
        url: DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        timeout_s: read timeout per request in seconds.
        connect_timeout_s: connect timeout; default min(10, timeout_s).
        session: a prepared `requests.Session` (authentication, TLS); a plain one by default.
        headers: extra HTTP headers (e.g. a bearer token).
        max_attempts: tries per request. dicomweb-client retries on any exception and on 408/429/
            503/504 with exponential back-off; its default (5 tries, x1 s) makes a refused
            connection take ~30 s, so we bound it (3 tries: ~1.5 s of back-off).

    Returns:
        The client.
    """
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=url.rstrip("/"), session=session, headers=headers,
                            timeout=(min(10.0, timeout_s) if connect_timeout_s is None else connect_timeout_s,
                                     timeout_s))
    client.set_http_retry_params(retry=max_attempts > 1, max_attempts=max(1, max_attempts),
                                 wait_exponential_multiplier=250)
    return client


class DicomWebSource:
    """Studies found by QIDO-RS and retrieved by WADO-RS into `work_dir/<study_uid>/`.

    Args:
        url: DICOMweb root of the PACS.
        work_dir: folder that receives the files (one sub-folder per study).
        date_from: first StudyDate (``YYYYMMDD``) or None.
        date_to: last StudyDate (``YYYYMMDD``) or None.
        modalities: ModalitiesInStudy to search; one QIDO query per modality, results merged.
        limit: at most this many studies per query (None = server default).
        timeout_s: per-request read timeout.
        session: optional `requests.Session` (authentication).
        headers: optional extra HTTP headers.
        max_attempts: tries per HTTP request (see `build_client`).

    Raises:
        SourceError: bad date range.
    """

    def __init__(self, url: str, work_dir: str | Path, *, date_from: str | None = None,
                 date_to: str | None = None, modalities: Sequence[str] = CHEST_MODALITIES,
                 limit: int | None = None, timeout_s: float = 30.0,
                 session: requests.Session | None = None, headers: dict[str, str] | None = None,
                 max_attempts: int = 3) -> None:
        self.url = url.rstrip("/")
        self.work_dir = Path(work_dir)
        self.date_range = dicom_date_range(date_from, date_to)
        self.modalities = tuple(modalities)
        self.limit = limit
        self.timeout_s = timeout_s
        self._client = build_client(self.url, timeout_s=timeout_s, session=session, headers=headers,
                                    max_attempts=max_attempts)

    def find_studies(self) -> list[str]:
        """QIDO-RS: Study Instance UIDs matching the date range and modalities, sorted, unique.

        Raises:
            PacsUnreachable, PacsRefused: the search failed.
        """
        uids: set[str] = set()
        for modality in self.modalities or (None,):
            filters: dict[str, str] = {}
            if modality:
                filters["ModalitiesInStudy"] = modality
            if self.date_range:
                filters["StudyDate"] = self.date_range
            try:
                found = self._client.search_for_studies(search_filters=filters, limit=self.limit,
                                                        fields=["StudyInstanceUID"])
            except Exception as exc:  # requests and dicomweb-client raise many types
                raise wrap_http_error(exc, self.url, "QIDO-RS study search") from exc
            uids.update(uid for uid in (_value(rec, _STUDY_UID) for rec in found) if uid)
        return sorted(uids)

    def fetch_study(self, study_uid: str) -> FetchedStudy:
        """WADO-RS: retrieve every instance of one study (original transfer syntax) to disk.

        Args:
            study_uid: the Study Instance UID.

        Returns:
            The study's local files.

        Raises:
            PacsUnreachable, PacsRefused: a request failed.
        """
        try:
            instances = self._client.search_for_instances(
                study_instance_uid=study_uid, fields=["SeriesInstanceUID", "SOPInstanceUID"])
        except Exception as exc:
            raise wrap_http_error(exc, self.url, "QIDO-RS instance search") from exc
        out_dir = self.work_dir / safe_dirname(study_uid)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = []
        for rec in instances:
            series_uid, sop_uid = _value(rec, _SERIES_UID), _value(rec, _SOP_UID)
            if not series_uid or not sop_uid:
                continue
            target = out_dir / f"{safe_dirname(sop_uid)}.dcm"
            if not target.exists():  # already fetched on an earlier (interrupted) run
                try:
                    ds = self._client.retrieve_instance(study_uid, series_uid, sop_uid,
                                                        media_types=(("application/dicom", "*"),))
                except Exception as exc:
                    raise wrap_http_error(exc, self.url, "WADO-RS instance retrieve") from exc
                tmp = target.with_suffix(".part")
                ds.save_as(tmp, enforce_file_format=True)
                tmp.replace(target)  # atomic: a crash never leaves a half-written .dcm
            files.append(target)
        return FetchedStudy(study_uid, tuple(sorted(files)), DICOMWEB)

    def studies(self) -> Iterator[FetchedStudy]:
        """Search, then retrieve and yield each matching study in UID order."""
        for uid in self.find_studies():
            yield self.fetch_study(uid)
