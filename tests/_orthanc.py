"""A real Orthanc for integration tests: Debian ``orthanc`` + ``orthanc-dicomweb``, on loopback.

`start_orthanc` writes its own JSON configuration into a temp folder (storage, index, free ports,
our SCP as a known modality, the DICOMweb plugin), spawns ``/usr/sbin/Orthanc cfg.json`` as a child
process, and waits (bounded) until ``GET /system`` answers, the process is still alive (a port
clash kills it about a second later) and ``GET /plugins`` lists ``dicom-web``. `OrthancServer.stop`
sends SIGTERM, waits, and falls back to SIGKILL.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORTHANC_BIN = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ORTHANC_AET = "ORTHANC"
OUR_AET = "MEDVLM"


def missing_reason() -> str | None:
    """Why Orthanc cannot run here, or None when it can."""
    if not ORTHANC_BIN.is_file():
        return f"{ORTHANC_BIN} absent: apt-get install orthanc orthanc-dicomweb"
    if not DICOMWEB_PLUGIN.is_file():
        return f"{DICOMWEB_PLUGIN} absent: apt-get install orthanc-dicomweb"
    return None


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class OrthancServer:
    """A running Orthanc child process."""

    process: subprocess.Popen
    http_port: int
    dicom_port: int
    our_port: int
    """Port registered in Orthanc's modality list for our SCP (AET `OUR_AET`)."""
    workdir: Path
    aet: str = ORTHANC_AET

    @property
    def url(self) -> str:
        """REST root."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb root."""
        return f"{self.url}/dicom-web"

    def rest(self, method: str, path: str, body: bytes | None = None, timeout: float = 30.0) -> Any:
        """Call the REST API; returns parsed JSON (or None for an empty body)."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/dicom")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def upload(self, path: str | Path) -> dict[str, Any]:
        """``POST /instances`` one DICOM file."""
        return self.rest("POST", "/instances", Path(path).read_bytes())

    def clear(self) -> None:
        """Delete every patient, so each test starts from an empty PACS."""
        for patient in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{patient}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to `timeout` s, then SIGKILL (by PID; idempotent)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _get_json(url: str, timeout: float = 1.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def start_orthanc(workdir: Path, *, our_port: int | None = None, startup_timeout_s: float = 30.0,
                  attempts: int = 3) -> OrthancServer:
    """Start Orthanc in `workdir`; retries with new ports if a port was taken meanwhile.

    Raises:
        RuntimeError: Orthanc did not come up (the log tail is in the message; it holds no PHI).
    """
    reason = missing_reason()
    if reason:
        raise RuntimeError(reason)
    last_error = ""
    for attempt in range(attempts):
        run_dir = workdir / f"orthanc-{attempt}"
        (run_dir / "storage").mkdir(parents=True, exist_ok=True)
        http_port, dicom_port = free_port(), free_port()
        scp_port = our_port or free_port()
        config = {
            "Name": "medvlm-test",
            "StorageDirectory": str(run_dir / "storage"),
            "IndexDirectory": str(run_dir / "storage"),
            "HttpPort": http_port,
            "DicomPort": dicom_port,
            "DicomAet": ORTHANC_AET,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {"medvlm": {"AET": OUR_AET, "Host": "127.0.0.1", "Port": scp_port}},
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{http_port}"},
            "StableAge": 1,
            "HttpTimeout": 30,
            "DicomScuTimeout": 15,
            "DicomAssociationCloseDelay": 0,
        }
        cfg = run_dir / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=2))
        log_path = run_dir / "orthanc.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([str(ORTHANC_BIN), str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                    cwd=run_dir, start_new_session=True)
        server = OrthancServer(proc, http_port, dicom_port, scp_port, run_dir)
        deadline = time.monotonic() + startup_timeout_s
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                _get_json(server.url + "/system")
                ready = True
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                time.sleep(0.1)
        if ready:
            time.sleep(1.0)  # a port clash kills the child about a second after HTTP answers
        if ready and proc.poll() is None:
            plugins = _get_json(server.url + "/plugins", timeout=5.0)
            if "dicom-web" in plugins:
                return server
            server.stop()
            raise RuntimeError(f"Orthanc runs but lists no dicom-web plugin (plugins: {plugins})")
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        last_error = f"attempt {attempt + 1}: exit code {proc.poll()}; log tail:\n{tail}"
        server.stop()
    raise RuntimeError(f"Orthanc did not start: {last_error}")

