"""DIMSE source (pynetdicom): C-FIND at study level, then C-MOVE to our own C-STORE SCP, or C-GET.

* `StoreSCP` is our storage SCP: an `AE.start_server` on a (loopback by default) port that writes
  every received instance to ``out_dir/<study_uid>/<sop_uid>.dcm`` exactly as sent (no re-encoding).
  Any peer may send to it (Orthanc after a C-MOVE, DCMTK's ``storescu``, a modality).
* `DimseSource` queries the PACS and retrieves each study into a work folder, with either
  ``method="move"`` (the PACS must know our AE title, host and port: its modality list) or
  ``method="get"`` (the PACS sends back on the same association; needs SCP role selection for
  each storage SOP class, which we propose).

Every network step has a bounded timeout; failures raise `PacsUnreachable` / `PacsRefused` whose
messages name the peer and the step, never patient data. pynetdicom is imported inside functions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_io.sources import (
    CHEST_MODALITIES,
    DIMSE,
    FetchedStudy,
    PacsError,
    PacsRefused,
    PacsUnreachable,
    SourceError,
    dicom_date_range,
    safe_dirname,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pynetdicom.association import Association

log = logging.getLogger(__name__)

MOVE, GET = "move", "get"
# Storage SOP classes we retrieve with C-GET (each needs its own presentation context; at most 128
# contexts fit in one association, so we list what a chest radiograph study holds, not all ~150).
GET_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",        # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",      # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",    # Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.7",        # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.88.11",    # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",    # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",    # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.11.1",     # Grayscale Softcopy Presentation State
)
GET_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",      # Explicit VR Little Endian
    "1.2.840.10008.1.2",        # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.50",   # JPEG Baseline
    "1.2.840.10008.1.2.4.51",   # JPEG Extended
    "1.2.840.10008.1.2.4.57",   # JPEG Lossless
    "1.2.840.10008.1.2.4.70",   # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",   # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",   # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",   # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",   # JPEG 2000
    "1.2.840.10008.1.2.5",      # RLE Lossless
)
_SUCCESS, _CANCEL = 0x0000, 0xFE00
_PENDING = (0xFF00, 0xFF01)
_STORE_OUT_OF_RESOURCES, _STORE_CANNOT_UNDERSTAND = 0xA700, 0xC000


def _make_ae(ae_title: str, timeout_s: float) -> Any:
    """A pynetdicom AE with every timeout bounded by `timeout_s`."""
    from pynetdicom import AE

    ae = AE(ae_title=ae_title)
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    return ae


class StoreReceiver:
    """Writes received instances under `out_dir/<study>/<sop>.dcm`; thread-safe bookkeeping."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._lock = threading.Lock()
        self._by_study: dict[str, list[Path]] = {}

    def handle_store(self, event: Any) -> int:
        """pynetdicom EVT_C_STORE handler: returns a DIMSE status."""
        try:
            ds = event.dataset
            study_uid = str(ds.StudyInstanceUID)
            sop_uid = str(ds.SOPInstanceUID)
        except Exception:  # noqa: BLE001 - undecodable data set: tell the peer, do not crash the SCP
            return _STORE_CANNOT_UNDERSTAND
        folder = self.out_dir / safe_dirname(study_uid)
        target = folder / f"{safe_dirname(sop_uid)}.dcm"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            tmp.write_bytes(event.encoded_dataset(include_meta=True))  # as sent, no re-encoding
            tmp.replace(target)
        except OSError:
            log.exception("C-STORE SCP could not write into %s", folder)
            return _STORE_OUT_OF_RESOURCES
        with self._lock:
            files = self._by_study.setdefault(study_uid, [])
            if target not in files:
                files.append(target)
        return _SUCCESS

    def files_of(self, study_uid: str) -> list[Path]:
        """Files received so far for one study."""
        with self._lock:
            return sorted(self._by_study.get(study_uid, []))

    def studies(self) -> dict[str, list[Path]]:
        """All files received so far, by study UID."""
        with self._lock:
            return {k: sorted(v) for k, v in self._by_study.items()}


class StoreSCP:
    """Our C-STORE SCP: receives instances from any peer into `out_dir`. Use as a context manager.

    Args:
        out_dir: folder receiving ``<study_uid>/<sop_uid>.dcm``.
        port: TCP port to listen on (0 = let the OS pick; see `port` after `start`).
        ae_title: our AE title.
        host: address to bind; loopback by default so nothing outside this machine can send.
        timeout_s: ACSE/DIMSE/network timeouts of incoming associations.
    """

    def __init__(self, out_dir: str | Path, port: int = 0, *, ae_title: str = "MEDVLM",
                 host: str = "127.0.0.1", timeout_s: float = 30.0) -> None:
        self.out_dir = Path(out_dir)
        self.host = host
        self.port = port
        self.ae_title = ae_title
        self.timeout_s = timeout_s
        self.receiver = StoreReceiver(self.out_dir)
        self._server: Any = None

    def start(self) -> StoreSCP:
        """Start listening in a background thread.

        Raises:
            PacsError: the port cannot be bound.
        """
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        self.out_dir.mkdir(parents=True, exist_ok=True)
        ae = _make_ae(self.ae_title, self.timeout_s)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        try:
            self._server = ae.start_server((self.host, self.port), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self.receiver.handle_store)])
        except OSError as exc:
            raise PacsError(f"{self.host}:{self.port}", f"cannot listen for C-STORE: {exc.strerror}",
                            "pick another port for our SCP") from exc
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        """Stop listening and close open associations (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> StoreSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tcp_reachable(host: str, port: int, timeout_s: float) -> bool:
    """Whether a TCP connection to host:port opens (pynetdicom reports a refused one as 'aborted')."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=min(timeout_s, 5.0)):
            return True
    except OSError:
        return False


def association_error(assoc: Association, host: str, port: int, called_aet: str, calling_aet: str,
                      step: str = "association", timeout_s: float = 5.0) -> PacsError:
    """The typed error for an association that was not established.

    Args:
        assoc: the failed association.
        host: peer address.
        port: peer port.
        called_aet: the peer's AE title.
        calling_aet: ours.
        step: what we were doing (for the message).
        timeout_s: bound on the TCP probe that tells "down" from "refused".

    Returns:
        `PacsRefused` when the peer answered and rejected/aborted, else `PacsUnreachable`.
    """
    peer = f"{host}:{port}"
    if assoc.is_rejected:
        return PacsRefused(peer, f"{step}: association rejected by {called_aet!r}",
                           f"check the called AE title and that {calling_aet!r} is in the PACS's modality list")
    if assoc.is_aborted and _tcp_reachable(host, port, timeout_s):
        return PacsRefused(peer, f"{step}: association aborted by {called_aet!r}",
                           f"add {calling_aet!r} to the PACS's known modalities, check the called AE title")
    return PacsUnreachable(peer, f"{step}: no association (connection refused or timed out)",
                           "check host, port and that the PACS runs")


def _status_of(status: Dataset, peer: str, step: str, calling_aet: str) -> int:
    """The Status value; an empty status dataset means the peer went away or timed out."""
    value = status.get("Status") if status is not None else None
    if value is None:
        # Orthanc, for one, aborts C-FIND/C-MOVE/C-GET from AE titles missing from its modality list.
        raise PacsRefused(peer, f"{step}: no response (association aborted or timed out)",
                          f"check that our calling AE title {calling_aet!r} is in the PACS's modality list, "
                          "and the timeout")
    return int(value)


class DimseSource:
    """Studies found by C-FIND and retrieved by C-MOVE (to our SCP) or C-GET into `work_dir`.

    Args:
        host: PACS address.
        port: PACS DICOM port.
        called_aet: the PACS's AE title.
        calling_aet: our AE title (also the C-MOVE destination; the PACS must know it).
        our_port: port of our C-STORE SCP for C-MOVE (0 = any free port; the PACS's modality entry
            must then be updated, so pass the registered port in practice).
        work_dir: folder receiving ``<study_uid>/<sop_uid>.dcm``.
        method: ``"move"`` or ``"get"``.
        date_from: first StudyDate ``YYYYMMDD`` or None.
        date_to: last StudyDate ``YYYYMMDD`` or None.
        modalities: ModalitiesInStudy queried (one C-FIND per modality, merged).
        timeout_s: ACSE/DIMSE/network/connect timeout of each association, in seconds.
        our_host: address our SCP binds to.

    Raises:
        SourceError: bad method or date range.
    """

    def __init__(self, host: str, port: int, called_aet: str, calling_aet: str = "MEDVLM",
                 our_port: int = 0, *, work_dir: str | Path, method: str = MOVE,
                 date_from: str | None = None, date_to: str | None = None,
                 modalities: Sequence[str] = CHEST_MODALITIES, timeout_s: float = 30.0,
                 our_host: str = "127.0.0.1") -> None:
        if method not in (MOVE, GET):
            raise SourceError(None, f"unknown retrieve method {method!r}", "use method='move' or 'get'")
        self.host, self.port = host, int(port)
        self.called_aet, self.calling_aet = called_aet, calling_aet
        self.our_port, self.our_host = int(our_port), our_host
        self.work_dir = Path(work_dir)
        self.method = method
        self.date_range = dicom_date_range(date_from, date_to)
        self.modalities = tuple(modalities)
        self.timeout_s = timeout_s

    @property
    def peer(self) -> str:
        """``host:port`` of the PACS, for messages."""
        return f"{self.host}:{self.port}"

    def _associate(self, ae: Any, **kwargs: Any) -> Association:
        assoc = ae.associate(self.host, self.port, ae_title=self.called_aet, **kwargs)
        if not assoc.is_established:
            raise association_error(assoc, self.host, self.port, self.called_aet, self.calling_aet,
                                    timeout_s=self.timeout_s)
        return assoc

    def find_studies(self) -> list[str]:
        """C-FIND (Study Root, STUDY level): matching Study Instance UIDs, sorted and unique.

        Raises:
            PacsUnreachable, PacsRefused: association or query failed.
        """
        from pydicom.dataset import Dataset
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FindModel

        ae = _make_ae(self.calling_aet, self.timeout_s)
        ae.add_requested_context(FindModel)
        uids: set[str] = set()
        assoc = self._associate(ae)
        try:
            for modality in self.modalities or ("",):
                query = Dataset()
                query.QueryRetrieveLevel = "STUDY"
                query.StudyInstanceUID = ""
                query.StudyDate = self.date_range or ""
                query.ModalitiesInStudy = modality
                for status, identifier in assoc.send_c_find(query, FindModel):
                    code = _status_of(status, self.peer, "C-FIND", self.calling_aet)
                    if code in _PENDING:
                        uid = str(identifier.get("StudyInstanceUID", "") or "") if identifier else ""
                        if uid:
                            uids.add(uid)
                    elif code != _SUCCESS:
                        raise PacsRefused(self.peer, f"C-FIND failed with status 0x{code:04X}",
                                          "see the PACS log; check the query filters")
        finally:
            assoc.release()
        return sorted(uids)

    def _retrieve_query(self, study_uid: str) -> Dataset:
        from pydicom.dataset import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        return query

    def _check_final(self, responses: Iterator[tuple[Dataset, Any]], step: str) -> None:
        """Drain C-MOVE/C-GET responses; raise unless the final status is Success."""
        final = None
        for status, _ in responses:
            code = _status_of(status, self.peer, step, self.calling_aet)
            if code in _PENDING:
                continue
            final = (code, int(status.get("NumberOfFailedSuboperations", 0) or 0))
        if final is None:
            raise PacsRefused(self.peer, f"{step}: no final status", "see the PACS log")
        code, failed = final
        if code != _SUCCESS or failed:
            hint = ("the PACS must know our AE title, host and port (its modality list)"
                    if step == "C-MOVE" else "see the PACS log; an unsupported SOP class or transfer syntax?")
            raise PacsRefused(self.peer, f"{step} ended with status 0x{code:04X}, {failed} failed sub-operations",
                              hint)

    def move_study(self, study_uid: str, receiver: StoreReceiver) -> FetchedStudy:
        """C-MOVE one study to our running SCP (its `receiver` collects the files)."""
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MoveModel

        ae = _make_ae(self.calling_aet, self.timeout_s)
        ae.add_requested_context(MoveModel)
        assoc = self._associate(ae)
        try:
            self._check_final(assoc.send_c_move(self._retrieve_query(study_uid), self.calling_aet, MoveModel),
                              "C-MOVE")
        finally:
            assoc.release()
        return FetchedStudy(study_uid, tuple(receiver.files_of(study_uid)), DIMSE)

    def get_study(self, study_uid: str) -> FetchedStudy:
        """C-GET one study on a single association (we take the SCP role for storage)."""
        from pynetdicom import build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GetModel

        receiver = StoreReceiver(self.work_dir)
        ae = _make_ae(self.calling_aet, self.timeout_s)
        ae.add_requested_context(GetModel)
        for sop_class in GET_STORAGE_CLASSES:
            ae.add_requested_context(sop_class, list(GET_TRANSFER_SYNTAXES))
        roles = [build_role(sop_class, scp_role=True) for sop_class in GET_STORAGE_CLASSES]
        assoc = self._associate(ae, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, receiver.handle_store)])
        try:
            self._check_final(assoc.send_c_get(self._retrieve_query(study_uid), GetModel), "C-GET")
        finally:
            assoc.release()
        return FetchedStudy(study_uid, tuple(receiver.files_of(study_uid)), DIMSE)

    def studies(self) -> Iterator[FetchedStudy]:
        """C-FIND, then retrieve and yield each study (our SCP runs only during C-MOVE retrieval)."""
        uids = self.find_studies()
        if not uids:
            return
        if self.method == GET:
            for uid in uids:
                yield self.get_study(uid)
            return
        scp = StoreSCP(self.work_dir, self.our_port, ae_title=self.calling_aet, host=self.our_host,
                       timeout_s=self.timeout_s)
        with scp:
            for uid in uids:
                yield self.move_study(uid, scp.receiver)
