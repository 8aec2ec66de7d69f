"""The web app's guards: body size, token and Host checks (one ASGI middleware), server
paths taken out of every answer, and files resolved strictly inside the output folder."""

from __future__ import annotations

import hmac
import json
import os
import re
import tempfile
from collections.abc import Iterable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

#: the largest request body accepted (a run request is a few hundred bytes)
MAX_BODY_BYTES = 64 * 1024
TOKEN_COOKIE = "popcorn_token"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: paths that never need the token: the page and its static files (they hold no data)
OPEN_PATHS = ("/", "/static/", "/favicon.ico")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS


def _json(status: int, body: dict) -> tuple[int, list, bytes]:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    return status, headers, data


class Guard:
    """ASGI middleware: refuses bodies over ``max_body`` (413, before the app reads them),
    requests without the token when one is set (401), and, with no token, requests whose
    Host is not a loopback name (421: a DNS-rebinding page cannot drive a local server)."""

    def __init__(
        self,
        app: Any,
        *,
        token: str | None,
        max_body: int = MAX_BODY_BYTES,
        allowed_hosts: Iterable[str] | None = None,
    ):
        self.app = app
        self.token = token
        self.max_body = max_body
        self.allowed_hosts = set(allowed_hosts) if allowed_hosts is not None else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope.get("path", "")
        refusal = self._refuse(headers, path)
        if refusal is not None:
            return await _send(send, *refusal)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await _send(send, *_too_large(self.max_body))
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body, more = bytearray(), True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body:
                    return await _send(send, *_too_large(self.max_body))
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)

    def _refuse(self, headers: dict[str, str], path: str) -> tuple | None:
        if self.token is None:
            host = _host_name(headers.get("host", ""))
            if self.allowed_hosts is not None and host not in self.allowed_hosts:
                names = ", ".join(sorted(self.allowed_hosts))
                return _json(
                    421,
                    {
                        "error": f"this server answers only to {names}",
                        "hint": "open it as http://127.0.0.1:PORT/, or start it with --token",
                    },
                )
            return None
        if path == "/" or path.startswith(OPEN_PATHS[1:]):
            return None
        given = _token_from(headers)
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            return _json(
                401,
                {
                    "error": "this server needs its access token",
                    "hint": "send 'Authorization: Bearer TOKEN' (the --token / POPCORN_TOKEN "
                    "the server was started with), or enter it on the page",
                },
            )
        return None


def _host_name(host: str) -> str:
    """The name part of a Host header (``[::1]:8765`` -> ``[::1]``, ``a:1`` -> ``a``)."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def _token_from(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if headers.get("x-popcorn-token"):
        return headers["x-popcorn-token"].strip()
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # noqa: BLE001 - a malformed cookie header is simply no token
        return None
    morsel = cookie.get(TOKEN_COOKIE)
    return morsel.value if morsel else None


def _too_large(limit: int) -> tuple:
    return _json(
        413,
        {
            "error": f"request body too large (the limit is {limit // 1024} KiB)",
            "hint": "a run request is a small JSON object: send only its fields",
        },
    )


async def _send(send, status: int, headers: list, data: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


# -- server paths out of answers -------------------------------------------------------

_ABS_PATH = re.compile(r"(?<![\w:/.~-])(?:/[\w.@+-]+){2,}/?")


class PathScrubber:
    """Replaces server paths in answers: known folders by a label, any other absolute path
    (two or more segments) by ``<path>/`` plus its last segment."""

    def __init__(self, roots: dict[str, str | Path | None]):
        self.pairs: list[tuple[str, str]] = []
        for label, root in roots.items():
            self.add(label, root)

    def add(self, label: str, root: str | Path | None) -> None:
        """Also show ``root`` (and its resolved form) as ``label``."""
        if not root:
            return
        forms = {str(Path(root).expanduser()), str(Path(root).expanduser().resolve())}
        pairs = set(self.pairs) | {(form, label) for form in forms if len(form) > 1}
        self.pairs = sorted(pairs, key=lambda p: -len(p[0]))

    def text(self, value: str) -> str:
        for root, label in self.pairs:
            if root in value:
                value = value.replace(root, label)
        return _ABS_PATH.sub(lambda m: "<path>/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], value)

    def __call__(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            return {key: self(value) for key, value in data.items()}
        if isinstance(data, list | tuple):
            return [self(value) for value in data]
        return data


def default_roots(settings: Any) -> dict[str, Any]:
    from llmpopcorn.core.cache import default_cache_dir

    try:
        cache = settings.cache_dir or default_cache_dir()
    except Exception:  # noqa: BLE001 - a scrubber must never fail
        cache = settings.cache_dir
    return {
        "<out>": settings.out_dir,
        "<data>": settings.data_dir,
        "<cache>": cache,
        "<tmp>": tempfile.gettempdir(),
        "~": os.path.expanduser("~"),
    }


# -- files -------------------------------------------------------------------------------


def file_inside(root: Path, run_dir: str | Path, name: str) -> Path | None:
    """``run_dir/name`` if it is a regular file whose real path stays inside ``root`` with
    no symbolic link on the way (the run folder, the file); else None."""
    root = root.resolve()
    folder = Path(run_dir)
    path = folder / name
    try:
        if folder.is_symlink() or path.is_symlink() or not path.is_file():
            return None
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root) or real.parent != folder.resolve():
        return None
    return real
