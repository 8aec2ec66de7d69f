"""A real local HTTP server speaking the OpenAI chat-completions protocol, for tests.

Responses are queued as (status, json body) pairs; when the queue runs dry the
last one repeats. Every request is recorded (path, headers, parsed body).

Faults for the hardening tests: :meth:`FakeOpenAIServer.queue_raw` answers with any
body and content type (an HTML page with HTTP 200); ``delay`` stalls each chat
request before it answers; ``echo_key`` replaces ``{API_KEY}`` in a reply with the
bearer token the request carried (a server that echoes the key); ``responder``, a
callable given the parsed request body, computes each chat answer as (status, json
body) instead of the queue (replies that depend on the request, e.g. on its seed).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(content: str, model: str = "test-model") -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops connections when many clients connect
    daemon_threads = True


class FakeOpenAIServer:
    def __init__(
        self,
        models: list[str] | None = None,
        *,
        delay: float = 0.0,
        echo_key: bool = False,
        responder=None,
    ):
        self.responses: list[tuple[int, dict | bytes, str]] = []
        self.requests: list[dict] = []
        self.models = models or ["test-model"]
        self.delay = delay
        self.echo_key = echo_key
        self.responder = responder
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(
                self, status: int, body: dict | bytes, content_type: str = "application/json"
            ) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                if server.echo_key:
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    data = data.replace(b"{API_KEY}", token.encode())
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def do_GET(self):  # noqa: N802
                server.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": None}
                )
                if self.path.endswith("/models"):
                    data = [
                        {"id": m, "object": "model", "created": 0, "owned_by": "x"}
                        for m in server.models
                    ]
                    self._send(200, {"object": "list", "data": data})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                        }
                    )
                if server.responder is not None:
                    status, payload = server.responder(body)
                    content_type = "application/json"
                elif len(server.responses) > 1:
                    status, payload, content_type = server.responses.pop(0)
                else:
                    status, payload, content_type = server.responses[0]
                if server.delay and server._stop.wait(server.delay):
                    return  # shutting down: drop the stalled request
                self._send(status, payload, content_type)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def queue(self, status: int, body: dict) -> FakeOpenAIServer:
        self.responses.append((status, body, "application/json"))
        return self

    def queue_raw(
        self, status: int, body: str | bytes, content_type: str = "text/html"
    ) -> FakeOpenAIServer:
        """Answer with ``body`` as it is (not JSON unless it is)."""
        data = body.encode() if isinstance(body, str) else body
        self.responses.append((status, data, content_type))
        return self

    @property
    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]
