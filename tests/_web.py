"""A loopback web server for the ``https://``-style input tests: http.server in a thread,
serving a directory, with or without byte ranges.

``ranges=True`` answers ``Range: bytes=a-b`` with 206 and sends ``Accept-Ranges`` and an
``ETag`` (honouring ``If-Match`` with 412), as object stores and CDNs do; ``ranges=False`` is
python's plain file server, which ignores ``Range`` and sends the whole file with 200.
Every request line (path and query) is logged in ``requests``.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Web:
    root: Path
    port: int
    requests: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


class _Plain(SimpleHTTPRequestHandler):
    web: Web

    def log_message(self, format: str, *args: Any) -> None:
        self.web.requests.append(f"{self.command} {self.path} {self.headers.get('Range', '')}")


class _Ranged(_Plain):
    def send_head(self) -> Any:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return super().send_head()
        data = path.read_bytes()
        etag = '"' + hashlib.md5(data).hexdigest() + '"'
        wanted = self.headers.get("If-Match")
        if wanted and wanted != etag:
            self.send_error(412, "Precondition Failed")
            return None
        found = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = 0, len(data) - 1
        if found:
            start = int(found.group(1))
            end = min(int(found.group(2) or end), len(data) - 1)
        part = data[start : end + 1]
        self.send_response(206 if found else 200)
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        if found:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        import io

        return io.BytesIO(part)


@contextmanager
def serving(root: Path, *, ranges: bool) -> Iterator[Web]:
    web = Web(root, 0)
    handler = type("Handler", (_Ranged if ranges else _Plain,), {"web": web})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=os.fspath(root)))
    web.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield web
    finally:
        server.shutdown()
        server.server_close()
