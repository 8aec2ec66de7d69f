"""A local fake of the stock-footage providers (Pexels and Pixabay), never the real hosts.

Two real HTTP servers on the loopback interface: the API (``http://127.0.0.1:PORT``,
Pexels' ``/v1/search`` and ``/videos/search``, Pixabay's ``/api/`` and ``/api/videos/``)
and a file host on another origin (``http://localhost:PORT2``, as a CDN would be), so a
test can see that the key reaches the API and never the files. The media are real: a
portrait JPEG and MP4s (H.264, made with the project's writer) painted in one colour, so a
test can tell the provider's pixels in the output.
"""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: the colour of every frame and photo the fake serves (a vivid green: easy to find)
GREEN = (20, 200, 60)


def jpeg(width: int, height: int, colour=GREEN) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def mp4(width: int, height: int, *, fps: int = 30, seconds: float = 4.0, colour=GREEN) -> bytes:
    """A real H.264 MP4: ``colour`` with a white bar sliding down (visible motion)."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from llmpopcorn.backends.base import Clip
    from llmpopcorn.backends.media import write_mp4

    count = round(fps * seconds)
    frames = []
    for i in range(count):
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = colour
        top = i * (height - 8) // max(1, count - 1)
        frame[top : top + 8] = 255
        frames.append(frame)
    with tempfile.TemporaryDirectory() as tmp:
        return write_mp4(Clip(frames=frames, fps=float(fps)), Path(tmp) / "f.mp4").read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class FakeStock:
    """``with FakeStock() as fake:`` then ``fake.api`` / ``fake.files`` are the two base
    URLs. ``fake.empty`` holds queries that find nothing; ``fake.requests`` every request
    (``server``: "api" or "files", ``path``, ``query``, ``headers``)."""

    def __init__(self):
        self.requests: list[dict[str, Any]] = []
        self.empty: set[str] = set()
        self.media = {
            "photo.jpg": jpeg(720, 1280),
            "portrait.mp4": mp4(360, 640),
            "landscape.mp4": mp4(640, 360, colour=(200, 30, 30)),
        }
        self._lock = threading.Lock()
        self._api = self._serve("api")
        self._files = self._serve("files")
        self.api = f"http://127.0.0.1:{self._api.server_address[1]}"
        self.files = f"http://localhost:{self._files.server_address[1]}"

    def _serve(self, role: str) -> _Server:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with fake._lock:
                    fake.requests.append(
                        {
                            "server": role,
                            "path": parts.path,
                            "query": query,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                        }
                    )
                if role == "files":
                    data = fake.media.get(parts.path.rsplit("/", 1)[-1])
                    return self._send(200 if data else 404, data or b"no such file")
                self._send(*fake.answer(parts.path, query))

            def _send(self, status: int, body: Any) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return _Server(("127.0.0.1", 0), Handler)

    # -- the providers' answers ------------------------------------------------------

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        term = query.get("query") or query.get("q") or ""
        found = term not in self.empty
        if path == "/v1/search":
            return 200, {"photos": [self._pexels_photo()] if found else []}
        if path == "/videos/search":
            # a landscape video first: a vertical one must still be preferred
            videos = [self._pexels_video(1, "landscape"), self._pexels_video(2, "portrait")]
            return 200, {"videos": videos if found else []}
        if path == "/api/":
            return 200, {"hits": [self._pixabay_photo()] if found else []}
        if path == "/api/videos/":
            return 200, {"hits": [self._pixabay_video()] if found else []}
        return 404, {"error": "not found"}

    def _pexels_photo(self) -> dict[str, Any]:
        return {
            "id": 101,
            "width": 720,
            "height": 1280,
            "url": "https://www.pexels.com/photo/101/",
            "photographer": "Ana Lens",
            "photographer_url": "https://www.pexels.com/@ana",
            "src": {"original": f"{self.files}/media/photo.jpg"},
        }

    def _pexels_video(self, number: int, shape: str) -> dict[str, Any]:
        width, height = (360, 640) if shape == "portrait" else (640, 360)
        return {
            "id": 200 + number,
            "width": width,
            "height": height,
            "duration": 4,
            "url": f"https://www.pexels.com/video/{200 + number}/",
            "user": {"name": f"Video Maker {number}", "url": "https://www.pexels.com/@vm"},
            "video_files": [
                {
                    "id": 1,
                    "quality": "sd",
                    "file_type": "video/mp4",
                    "width": width,
                    "height": height,
                    "link": f"{self.files}/media/{shape}.mp4",
                }
            ],
        }

    def _pixabay_photo(self) -> dict[str, Any]:
        return {
            "id": 301,
            "pageURL": "https://pixabay.com/photos/301/",
            "user": "pixa_user",
            "user_id": 7,
            "imageWidth": 720,
            "imageHeight": 1280,
            "largeImageURL": f"{self.files}/media/photo.jpg",
        }

    def _pixabay_video(self) -> dict[str, Any]:
        return {
            "id": 401,
            "pageURL": "https://pixabay.com/videos/401/",
            "user": "pixa_video",
            "user_id": 8,
            "duration": 4,
            "videos": {
                "small": {"url": f"{self.files}/media/portrait.mp4", "width": 360, "height": 640}
            },
        }

    def api_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["server"] == "api"]

    def file_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["server"] == "files"]

    def __enter__(self) -> FakeStock:
        for server in (self._api, self._files):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in (self._api, self._files):
            server.shutdown()
            server.server_close()
