"""Servers on the loopback for remote-store tests: a static HTTP file server
that lists nothing (a CDN, an object store's website, nginx without autoindex)
and answers Range requests, counting the bytes it sends per path; and moto's
S3 server, as s3fs's own tests use it."""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path


class StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Files only: a folder is a 404, and `Range: bytes=a-b` gets a 206."""

    sent: Counter  # bytes sent per request path, set by `static_server`
    #: path -> "500" (an internal server error) or "length" (a Content-Length
    #: 100 bytes longer than what is sent), set by `static_server`
    faults: dict

    def fault(self) -> str | None:
        return self.faults.get(self.path.split("?")[0].lstrip("/"))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def send_head(self):  # noqa: ANN201
        path = self.translate_path(self.path)
        if self.fault() == "500":
            self.send_error(500, "something broke")
            return None
        if os.path.isdir(path) or not os.path.isfile(path):
            self.send_error(404, "no listings here")
            return None
        size = os.path.getsize(path)
        start, stop = 0, size
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes="):
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            if first:
                start, stop = int(first), min(size, int(last) + 1 if last else size)
            else:  # a suffix: the last N bytes
                start = max(0, size - int(last))
        handle = open(path, "rb")  # noqa: SIM115 (closed by copyfile's caller)
        handle.seek(start)
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Type", "application/octet-stream")
        lie = 100 if self.fault() == "length" else 0
        self.send_header("Content-Length", str(stop - start + lie))
        self.send_header("Accept-Ranges", "bytes")
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.end_headers()
        self._remaining = stop - start
        return handle

    def copyfile(self, source, outputfile) -> None:  # noqa: ANN001
        data = source.read(self._remaining)
        outputfile.write(data)
        self.sent[self.path.split("?")[0].lstrip("/")] += len(data)


@contextlib.contextmanager
def static_server(folder: Path, faults: dict[str, str] | None = None,
                  ) -> Iterator[tuple[str, Counter]]:
    """Serve `folder` on 127.0.0.1 at an ephemeral port: (base URL, bytes sent
    per path); `faults` maps paths to "500" or "length" (see StaticHandler)."""
    sent: Counter = Counter()
    handler = type("Handler", (StaticHandler,), {"sent": sent, "faults": faults or {}})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: handler(*a, directory=str(folder))
    )
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", sent
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 at an ephemeral port; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def upload_folder(endpoint: str, folder: Path, bucket: str, prefix: str) -> None:
    """Copy `folder` to s3://bucket/prefix/ (what `aws s3 sync` does)."""
    import s3fs

    fs = s3fs.S3FileSystem(anon=False, client_kwargs={"endpoint_url": endpoint})
    fs.mkdir(bucket)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        fs.pipe(f"{bucket}/{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())
