"""A real local HTTP server (127.0.0.1 only) speaking the hosted generators' protocols.

- fal's queue: ``POST /{model}`` -> request id and URLs; ``GET
  /{owner}/{app}/requests/{id}/status`` -> IN_QUEUE / IN_PROGRESS / COMPLETED;
  ``GET /{owner}/{app}/requests/{id}`` -> the result; ``PUT .../cancel``;
- OpenAI Images: ``POST /v1/images/generations``;
- files: ``GET /files/{name}`` (optionally cut short on the first N downloads).

Scenarios are plain attributes set by the test; every request is recorded.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image


def png_bytes(width: int = 90, height: int = 160, colour=(200, 120, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def mp4_bytes(width: int = 72, height: int = 128, fps: int = 16, seconds: float = 5.0) -> bytes:
    """A real H.264 MP4 (a moving gradient) made with the project's own writer."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from llmpopcorn.backends.base import Clip
    from llmpopcorn.backends.media import write_mp4

    n = round(fps * seconds)
    frames = [
        np.full((height, width, 3), (i * 3 % 256, 100, 255 - i * 3 % 256), dtype=np.uint8)
        for i in range(n)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mp4(Clip(frames=frames, fps=float(fps)), Path(tmp) / "v.mp4")
        return path.read_bytes()


Reply = tuple[int, Any, dict[str, str]]  # status, JSON body (or bytes), headers


class FakeHostedServer:
    def __init__(self):
        self.requests: list[dict[str, Any]] = []
        # fal
        self.submit_replies: list[Reply] = []  # served first, one per submit
        self.queue_polls = 0  # IN_QUEUE answers before IN_PROGRESS
        self.progress_polls = 0  # IN_PROGRESS answers before COMPLETED
        self.never_complete = False
        self.status_delay = 0.0  # seconds the status endpoint waits before answering
        self.status_error: Any = None  # an "error" in the COMPLETED status
        self.result_reply: Reply | None = None  # replaces the normal result
        self.result: dict[str, Any] | None = None  # default: image or video by model
        self.nsfw = False
        # OpenAI Images
        self.openai_replies: list[Reply] = []
        self.openai_image = png_bytes(1024, 1536)
        # files
        self.files: dict[str, bytes] = {"cover.png": png_bytes(), "clip.mp4": b""}
        self.truncate_downloads = 0  # the first N file downloads are cut in half
        self._polls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._count = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    return raw.decode("utf-8", "replace")

            def _record(self, method: str, body: Any = None) -> None:
                with server._lock:
                    server.requests.append(
                        {
                            "method": method,
                            "path": self.path,
                            "headers": dict(self.headers),
                            "json": body,
                        }
                    )

            def _send(self, status: int, body: Any, headers: dict | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                ctype = (
                    "application/octet-stream" if isinstance(body, bytes) else "application/json"
                )
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                body = self._body()
                self._record("POST", body)
                if self.path.startswith("/v1/images/generations"):
                    return self._openai(body)
                return self._submit()

            def do_PUT(self):  # noqa: N802
                self._record("PUT", self._body())
                self._send(202, {"status": "CANCELLATION_REQUESTED"})

            def do_GET(self):  # noqa: N802
                self._record("GET")
                if self.path.startswith("/files/"):
                    return self._file(self.path[len("/files/") :])
                if self.path.endswith("/status"):
                    return self._status()
                if "/requests/" in self.path:
                    return self._result()
                self._send(404, {"detail": "Not Found"})

            # -- fal ----------------------------------------------------------------

            def _submit(self):
                with server._lock:
                    reply = server.submit_replies.pop(0) if server.submit_replies else None
                    server._count += 1
                    rid = f"req-{server._count}"
                if reply is not None:
                    return self._send(*reply)
                model = self.path.strip("/")
                app = "/".join(model.split("/")[:2])
                base = f"{server.url}/{app}/requests/{rid}"
                server._models[rid] = model
                self._send(
                    200,
                    {
                        "request_id": rid,
                        "status_url": f"{base}/status",
                        "response_url": base,
                        "cancel_url": f"{base}/cancel",
                    },
                )

            def _status(self):
                if server.status_delay:
                    time.sleep(server.status_delay)
                rid = self.path.split("/requests/")[1].split("/")[0]
                with server._lock:
                    n = server._polls.get(rid, 0)
                    server._polls[rid] = n + 1
                if server.never_complete or n < server.queue_polls:
                    return self._send(200, {"status": "IN_QUEUE", "queue_position": 3})
                if n < server.queue_polls + server.progress_polls:
                    return self._send(200, {"status": "IN_PROGRESS", "logs": []})
                body = {"status": "COMPLETED", "response_url": "..."}
                if server.status_error is not None:
                    body["error"] = server.status_error
                self._send(200, body)

            def _result(self):
                if server.result_reply is not None:
                    return self._send(*server.result_reply)
                rid = self.path.split("/requests/")[1].split("/")[0]
                model = server._models.get(rid, "")
                if server.result is not None:
                    return self._send(200, server.result)
                if "video" in model or "ltx" in model or "kling" in model or "wan" in model:
                    return self._send(200, {"video": {"url": f"{server.url}/files/clip.mp4"}})
                return self._send(
                    200,
                    {
                        "images": [{"url": f"{server.url}/files/cover.png", "width": 90}],
                        "has_nsfw_concepts": [server.nsfw],
                        "seed": 1,
                    },
                )

            def _file(self, name: str):
                data = server.files.get(name)
                if data is None:
                    return self._send(404, {"detail": "no such file"})
                with server._lock:
                    cut = server.truncate_downloads > 0
                    if cut:
                        server.truncate_downloads -= 1
                if not cut:
                    return self._send(200, data)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True

            # -- OpenAI ---------------------------------------------------------------

            def _openai(self, body: Any):
                with server._lock:
                    reply = server.openai_replies.pop(0) if server.openai_replies else None
                if reply is not None:
                    return self._send(*reply)
                b64 = base64.b64encode(server.openai_image).decode()
                self._send(
                    200,
                    {"created": 0, "data": [{"b64_json": b64}], "usage": {"total_tokens": 10}},
                    {"x-request-id": "req_openai_1"},
                )

        self._models: dict[str, str] = {}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeHostedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def of(self, method: str, contains: str = "") -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and contains in r["path"]]


class FakeClock:
    """Time that moves only when the code under test sleeps (no real waiting)."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
