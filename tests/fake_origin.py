"""A tiny HTTP server on 127.0.0.1 whose routes a test sets, and that logs every request it
gets (method, path, headers): the network log that shows which host saw which key.

``routes[path] = reply`` where reply is ``(status, headers, body)``; ``body`` is bytes or
an iterable of byte chunks (sent with chunked encoding; the server stops when the
client hangs up). Unknown paths answer 404.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, str], Any]


class FakeOrigin:
    def __init__(self, host: str = "127.0.0.1"):
        self.routes: dict[str, Reply] = {}
        self.log: list[dict[str, Any]] = []
        self.chunks_sent = 0
        self._lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with origin._lock:
                    origin.log.append(
                        {
                            "method": method,
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body.decode("utf-8", "replace"),
                        }
                    )
                route = origin.routes.get(self.path.split("?")[0])
                if route is None:
                    route = (404, {}, b'{"detail": "not found"}')
                status, headers, payload = route
                if callable(payload):
                    payload = payload()
                if isinstance(payload, dict | list):
                    payload = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if isinstance(payload, bytes):
                    if "Content-Length" not in headers:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self._chunks(payload)

            def _chunks(self, chunks: Iterable[bytes]) -> None:
                try:
                    for chunk in chunks:
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        self.wfile.flush()
                        with origin._lock:
                            origin.chunks_sent += 1
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def do_GET(self):  # noqa: N802
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def do_PUT(self):  # noqa: N802
                self._serve("PUT")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeOrigin:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def seen(self, text: str) -> list[dict[str, Any]]:
        """Requests whose headers, path or body contain ``text`` (e.g. a key)."""
        return [r for r in self.log if text in json.dumps(r)]


def guard_connects(monkeypatch) -> list[str]:
    """Every address a socket connects to, recorded; anything but loopback fails to connect
    (as a network without a route would), so a test sees the attempt, never the network."""
    seen: list[str] = []
    connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        seen.append(host)
        if host not in ("127.0.0.1", "::1"):
            raise OSError(f"test: no route to {host}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return seen
