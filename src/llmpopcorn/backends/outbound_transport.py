"""The httpx side of :mod:`llmpopcorn.backends.outbound` (imported only when a request is
made: listing backends must not import httpx).

:class:`GuardedTransport` enforces the policy on every request it carries, whoever built
it (the policy, an SDK, httpx's redirect handling): scheme and address, no credential
for another origin, the byte cap and the total deadline while the body streams. The
real transport connects only to addresses the policy checked (:class:`PinnedBackend`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpcore
import httpx

from llmpopcorn.backends.origins import (
    DEADLINE,
    MAX_BYTES,
    Origin,
    OutboundError,
    OutboundRefused,
    OutboundTimeout,
    OutboundTooLarge,
    shown,
)

if TYPE_CHECKING:  # pragma: no cover - the policy imports this module, not the reverse
    from llmpopcorn.backends.outbound import OutboundPolicy


class GuardedTransport(httpx.BaseTransport):
    def __init__(self, policy: OutboundPolicy, inner: httpx.BaseTransport | None = None):
        self.policy = policy
        self.pinned = inner is None
        self.inner = inner if inner is not None else pinned_transport(policy)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        policy = self.policy
        # the pinned transport checks the addresses where it connects; another one: here
        policy.check_url(request.url, resolve=not self.pinned)
        if not policy.same_origin(request.url):
            strip_credentials(policy, request)
        now = policy.clock()
        deadline = request.extensions.get(DEADLINE) or now + policy.request_timeout
        limit = request.extensions.get(MAX_BYTES) or policy.max_bytes
        left = deadline - now
        if left <= 0:
            raise deadline_error(policy, request.url)
        # no single wait may outlast the deadline either
        timeouts = dict(request.extensions.get("timeout") or {})
        for key in ("connect", "read", "write", "pool"):
            value = timeouts.get(key)
            timeouts[key] = left if value is None else min(value, left)
        request.extensions["timeout"] = timeouts
        response = self.inner.handle_request(request)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            response.close()
            raise too_large(policy, request.url, f"{int(declared):,} bytes", limit)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=BoundedStream(response.stream, policy, request.url, limit, deadline),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


def strip_credentials(policy: OutboundPolicy, request: httpx.Request) -> None:
    """Remove every credential header; refuse when the key is still in the URL or a header
    (a provider that put it into a link for another host)."""
    for name in list(request.headers):
        if name.lower() in policy.secret_headers:
            del request.headers[name]
    values = " ".join(request.headers.values())
    if policy.carries_secret(str(request.url)) or policy.carries_secret(values):
        raise OutboundRefused(
            f"refused to send the {policy.who} key to {Origin.of(request.url)} "
            f"(it is configured for {policy.origin})",
            f"a {policy.who} answer or redirect put the key into a URL for another host",
        )


class BoundedStream(httpx.SyncByteStream):
    """The body, stopped past ``limit`` bytes or past ``deadline`` on the policy's clock."""

    def __init__(self, inner: Any, policy: OutboundPolicy, url: Any, limit: int, deadline: float):
        self.inner, self.policy, self.url = inner, policy, url
        self.limit, self.deadline = limit, deadline

    def __iter__(self) -> Iterator[bytes]:
        total = 0
        for chunk in self.inner:
            total += len(chunk)
            if total > self.limit:
                raise too_large(self.policy, self.url, f"more than {self.limit:,} bytes", None)
            if self.policy.clock() > self.deadline:
                raise deadline_error(self.policy, self.url)
            yield chunk

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def too_large(policy: OutboundPolicy, url: Any, size: str, limit: int | None) -> OutboundTooLarge:
    cap = f" (limit {limit:,})" if limit is not None else ""
    return OutboundTooLarge(
        f"the {policy.who} answer from {shown(url)} is too large: {size}{cap}",
        "the provider sent far more than a cover or clip needs; retry, or raise the "
        "backend's max_download_mb option if the file is expected to be this large",
    )


def deadline_error(policy: OutboundPolicy, url: Any) -> OutboundTimeout:
    return OutboundTimeout(
        f"{policy.who} did not finish sending {shown(url)} in time (total deadline passed)",
        "retry later, or raise the backend's request_timeout / download_timeout option",
    )


def pinned_transport(policy: OutboundPolicy) -> httpx.HTTPTransport:
    """httpx's own transport, connecting only to addresses the policy checked: the check
    and the connection use the same DNS answer (TLS still verifies the host name)."""
    transport = httpx.HTTPTransport(trust_env=False)
    if not isinstance(getattr(transport, "_pool", None), httpcore.ConnectionPool):
        raise OutboundError(  # pragma: no cover - a future httpx; the tests would say so
            "this httpx version cannot pin connections to checked addresses",
            "install httpx>=0.27,<1 (the hosted extra)",
        )
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(), network_backend=PinnedBackend(policy)
    )
    return transport


class PinnedBackend(httpcore.SyncBackend):
    """httpcore's network backend, resolving and checking the host itself."""

    def __init__(self, policy: OutboundPolicy):
        self.policy = policy

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, **kw: Any
    ) -> httpcore.NetworkStream:
        error: Exception | None = None
        for address in self.policy.allowed_addresses(host, port):
            try:
                return super().connect_tcp(address, port, timeout=timeout, **kw)
            except httpcore.ConnectError as exc:  # the next address, else the last error
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(self, *args: Any, **kw: Any) -> httpcore.NetworkStream:
        raise OutboundRefused("provider requests do not use unix sockets", "")  # pragma: no cover
