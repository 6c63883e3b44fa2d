"""A source folder's worst entries, made for real: a name that is not UTF-8, a folder named ``x.dcm``,
a FIFO, a unix socket, a symlink loop, a broken link and a link to a file outside the folder.

``add_bad_entries(folder, outside)`` returns the relative names (printable) and the reason code
each one must be recorded with; the socket stays bound until ``close()`` is called on the result.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

BAD_NAME = b"bad-\xff\xfe-name.dcm"
EXPECTED = {
    "bad-\\xff\\xfe-name.dcm": "file_name_not_utf8",
    "x.dcm": "folder_named_as_file",
    "pipe.dcm": "fifo",
    "sock.dcm": "socket",
    "loop_a.dcm": "symlink_loop",
    "loop_b.dcm": "symlink_loop",
    "gone.dcm": "broken_symlink",
    "escape.dcm": "symlink_outside_source",
}


class BadEntries:
    """The bad entries of one folder; `close` unbinds the socket."""

    def __init__(self, folder: Path, outside: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (Path(os.fsdecode(os.fsencode(folder) + b"/" + BAD_NAME))).write_bytes(b"not dicom, and a bad name")
        (folder / "x.dcm").mkdir()
        (folder / "x.dcm" / "inside.dcm").write_bytes(b"never read: the folder is set aside")
        os.mkfifo(folder / "pipe.dcm")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(folder / "sock.dcm"))
        os.symlink("loop_b.dcm", folder / "loop_a.dcm")
        os.symlink("loop_a.dcm", folder / "loop_b.dcm")
        os.symlink("does-not-exist.dcm", folder / "gone.dcm")
        outside.write_bytes(b"a file outside the source folder")
        os.symlink(outside, folder / "escape.dcm")
        self.expected = dict(EXPECTED)

    def close(self) -> None:
        self.sock.close()
