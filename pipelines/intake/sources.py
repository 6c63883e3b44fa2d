"""Turn a ``--source`` string into a study source (``dicom_io`` sources) for `medvlm draft`.

Accepted forms:

* ``PATH`` or ``folder:PATH``: a folder of DICOM files (``FolderSource``); with ``watch`` it is
  polled for new files (``folder+watch:PATH`` does the same).
* ``dicomweb:URL``: QIDO-RS search + WADO-RS retrieval from a DICOMweb root, e.g.
  ``dicomweb:http://127.0.0.1:8042/dicom-web`` (``DicomWebSource``).
* ``dimse://CALLED_AET@HOST:PORT``: C-FIND + C-MOVE from a PACS (``DimseSource``). Query options:
  ``?calling=MEDVLM`` (our AE title; the PACS must know it for C-MOVE), ``&our_port=11113``
  (port of our C-STORE SCP, as registered in the PACS), ``&method=get`` (C-GET instead of C-MOVE).
  The keyword arguments of `parse_source` give the same settings; the query string wins.

Retrieved files land in ``work_dir/<study_uid>/``; keep that folder: the sign-off export reads the
source headers from there to file the SR in the right study.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dicom_io.sources import SourceError


@dataclass(frozen=True)
class ParsedSource:
    """A parsed ``--source`` string.

    Attributes:
        kind: ``folder``, ``dicomweb`` or ``dimse``.
        label: what is recorded as the studies' source in the store (a path or a peer address, no PHI).
        source: the ``dicom_io`` source object; its ``studies()`` yields ``FetchedStudy`` records.
    """

    kind: str
    label: str
    source: Any


def parse_source(
    spec: str,
    *,
    work_dir: str | Path = Path("var") / "incoming",
    calling_aet: str = "MEDVLM",
    our_port: int = 0,
    method: str = "move",
    watch: bool = False,
    watch_idle_s: float = 60.0,
    stop: threading.Event | None = None,
    timeout_s: float = 30.0,
) -> ParsedSource:
    """Parse a ``--source`` string (forms in the module docstring) and build its source.

    Args:
        spec: the string.
        work_dir: where PACS sources write what they retrieve.
        calling_aet: our AE title for DIMSE.
        our_port: our C-STORE SCP port for C-MOVE (0 = any free port).
        method: ``move`` or ``get`` for DIMSE.
        watch: poll a folder source for new files.
        watch_idle_s: a watched folder ends after this many seconds without a new file.
        stop: event that ends a watched folder early.
        timeout_s: network timeout of PACS sources.

    Returns:
        The parsed source.

    Raises:
        SourceError: an empty or malformed string, or a folder that does not exist.
    """
    text = (spec or "").strip()
    if not text:
        raise SourceError(None, "empty --source", "pass a folder, dicomweb:URL or dimse://AET@HOST:PORT")
    if text.startswith("dicomweb:"):
        from dicom_io.dicomweb import DicomWebSource

        url = text[len("dicomweb:"):]
        if not url.startswith(("http://", "https://")):
            raise SourceError(None, f"DICOMweb URL must start with http:// or https://, got {url!r}",
                              "use dicomweb:http://HOST:PORT/dicom-web")
        src = DicomWebSource(url, Path(work_dir), timeout_s=timeout_s)
        return ParsedSource("dicomweb", url.rstrip("/"), src)
    if text.startswith("dimse://"):
        return _parse_dimse(text, Path(work_dir), calling_aet, our_port, method, timeout_s)
    if text.startswith("folder+watch:"):
        text, watch = text[len("folder+watch:"):], True
    elif text.startswith("folder:"):
        text = text[len("folder:"):]
    from dicom_io.sources import FolderSource

    folder = FolderSource(text, watch=watch, idle_timeout_s=watch_idle_s, stop=stop)
    return ParsedSource("folder", str(folder.root), folder)


def _parse_dimse(text: str, work_dir: Path, calling_aet: str, our_port: int, method: str,
                 timeout_s: float) -> ParsedSource:
    from dicom_io.dimse import DimseSource

    parts = urlsplit(text)
    hint = "use dimse://CALLED_AET@HOST:PORT[?calling=AET&our_port=N&method=move|get]"
    if not parts.username or not parts.hostname:
        raise SourceError(None, "DIMSE source needs the called AE title and host", hint)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise SourceError(None, "DIMSE source needs a port", hint)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    calling = query.get("calling", calling_aet)
    try:
        scp_port = int(query.get("our_port", our_port))
    except ValueError:
        raise SourceError(None, "our_port must be an integer", hint) from None
    src = DimseSource(parts.hostname, port, parts.username, calling, scp_port, work_dir=work_dir,
                      method=query.get("method", method), timeout_s=timeout_s)
    return ParsedSource("dimse", f"{parts.username}@{parts.hostname}:{port}", src)
