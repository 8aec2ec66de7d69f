"""The outbound policy's vocabulary: where a request goes (:class:`Origin`, address kinds),
how a URL may be shown in a message, and the errors a refused or stopped request raises.

Shared by :mod:`llmpopcorn.backends.outbound` (the policy) and
:mod:`llmpopcorn.backends.outbound_transport` (the httpx transport that enforces it), so
neither imports the other's module at run time.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from llmpopcorn.core.errors import RenderError

#: request extensions the transport reads: the request's wall-clock deadline and byte cap
DEADLINE = "popcorn.deadline"
MAX_BYTES = "popcorn.max_bytes"


class OutboundError(RenderError):
    """A provider request refused or stopped by the policy."""


class OutboundRefused(OutboundError):
    """The URL's scheme or address is not allowed, or it would carry a key elsewhere."""


class OutboundTooLarge(OutboundError):
    """A body over the byte cap, or a picture over the pixel cap."""


class OutboundTimeout(OutboundError):
    """The request's total deadline passed."""


class OutboundHTTPError(OutboundError):
    """:meth:`OutboundPolicy.download` got an error status."""

    def __init__(self, message: str, hint: str | None = None, *, status: int = 0):
        super().__init__(message, hint)
        self.status = status


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: Any) -> Origin:
        parts = urlsplit(str(url))
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            port = None
        host = (parts.hostname or "").lower().rstrip(".")
        return cls(scheme, host, port or {"http": 80, "https": 443}.get(scheme, 0))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def shown(url: Any) -> str:
    """A URL as it may appear in a message: no query, no user info (they may hold a key)."""
    parts = urlsplit(str(url))
    path = parts.path if len(parts.path) <= 80 else parts.path[:77] + "..."
    host = parts.hostname or "?"
    port = f":{parts.port}" if _port(parts) else ""
    return f"{parts.scheme}://{host}{port}{path}"


def _port(parts: Any) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def address_kind(address: str) -> str:
    """``global``, ``loopback``, ``link-local``, ``private`` or ``other`` (multicast,
    unspecified, reserved, shared ranges)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "other"
    if ip.is_global:
        return "global"
    if ip.is_private:
        return "private"
    return "other"


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
