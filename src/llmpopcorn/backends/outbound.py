"""One outbound-HTTP policy for every hosted backend and download.

A backend that calls a provider builds one :class:`OutboundPolicy` from the base URL the
*user configured* (server configuration, never a request's or a provider's answer) and
sends every request through it. The policy holds four rules, each enforced at the
transport (:class:`GuardedTransport`), so that they also hold for requests an SDK makes
(``policy.sdk_client()``) and for every redirect hop:

1. **Keys go only to the configured origin** (scheme, host, port). Credentials are
   attached by the policy (``headers`` / ``params``) when the URL's origin is the
   configured one; a URL on another origin (a provider's ``status_url``, a CDN link, a
   redirect) is fetched without them: ``Authorization`` and the configured credential
   headers are removed, and a URL or header that still carries a key is refused.
2. **Only http(s), only permitted addresses.** A host must resolve to public addresses,
   unless the configured base URL is itself local: then addresses of the same kind
   (loopback for a 127.0.0.1 base, private for a LAN base) are allowed too. Link-local
   (169.254.0.0/16, the cloud metadata address), multicast, unspecified and reserved
   addresses are refused unless they are the configured host's own. The real transport
   connects to the address it checked (no second DNS answer can swap it).
3. **A byte cap per response** (``max_bytes``, default :data:`DEFAULT_MAX_BYTES`), checked
   against ``Content-Length`` first, then while streaming.
4. **A total deadline per request on the wall clock** (``deadline``: an absolute time on
   ``clock``), checked between chunks, not only per read; each read also waits at most
   what is left. Tests pass a fake clock.

Images from providers are opened with :func:`open_image`, which turns Pillow's
decompression-bomb error (and any picture over :data:`MAX_IMAGE_PIXELS`) into "the
provider's image is too large".

Typical use (a stock-footage backend)::

    policy = OutboundPolicy(base_url, headers={"Authorization": key}, who="pexels")
    found = policy.request("GET", f"{policy.base_url}/videos/search", params={...}).json()
    data = policy.download(found["videos"][0]["video_files"][0]["link"])
    policy.close()
"""

from __future__ import annotations

import io
import ipaddress
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmpopcorn.backends.origins import (
    DEADLINE,
    MAX_BYTES,
    Origin,
    OutboundError,
    OutboundHTTPError,
    OutboundRefused,
    OutboundTimeout,
    OutboundTooLarge,
    address_kind,
    shown,
    system_resolver,
)

if TYPE_CHECKING:  # pragma: no cover
    import httpx
    from PIL import Image

#: the largest response body accepted by default: a 10 s 1080p clip at a high bitrate is
#: 25-60 MB, a stock HD file rarely over 100 MB; the cap keeps memory bounded, not tight
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
#: the largest picture opened from a provider (a 2048x2048 cover is 4.2 M pixels)
MAX_IMAGE_PIXELS = 50_000_000
#: redirects followed at most (each hop is checked like the first URL)
MAX_REDIRECTS = 5
#: headers that always count as credentials (removed for any other origin)
ALWAYS_SECRET_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "api-key", "cookie")

Resolver = Callable[[str, int], Sequence[str]]


# -- the policy -----------------------------------------------------------------------------


class OutboundPolicy:
    """What one backend may send where (see the module docstring).

    ``headers`` / ``params``: the credentials, attached only on the configured origin;
    ``secrets``: other values that must never leave for another origin (the key itself is
    taken from ``headers`` / ``params``); ``who``: the provider's name in messages;
    ``transport``: an httpx transport for tests (the policy still checks every URL).
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
        who: str = "the provider",
        max_bytes: int = DEFAULT_MAX_BYTES,
        request_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        resolver: Resolver = system_resolver,
        transport: Any = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.origin = Origin.of(self.base_url)
        if self.origin.scheme not in ("http", "https") or not self.origin.host:
            raise OutboundRefused(
                f"the {who} URL must be http(s)://HOST...: {shown(base_url)}",
                "fix base_url",
            )
        self.headers = {k: v for k, v in (headers or {}).items() if v}
        self.params = {k: v for k, v in (params or {}).items() if v}
        self.secrets = tuple(
            s for s in (*self.headers.values(), *self.params.values(), *secrets) if s
        )
        self.secret_headers = {*ALWAYS_SECRET_HEADERS, *(k.lower() for k in self.headers)}
        self.who = who
        self.max_bytes = max_bytes
        self.request_timeout = request_timeout
        self.clock = clock
        self.resolver = resolver
        self._transport = transport
        self._base_addresses: set[str] | None = None
        self._clients: dict[bool, httpx.Client] = {}

    # -- rules ---------------------------------------------------------------------

    def same_origin(self, url: Any) -> bool:
        return Origin.of(url) == self.origin

    def base_addresses(self) -> set[str]:
        if self._base_addresses is None:
            try:
                self._base_addresses = set(self.resolver(self.origin.host, self.origin.port))
            except OSError:
                self._base_addresses = set()
        return self._base_addresses

    def allowed_kinds(self) -> set[str]:
        """Kinds of address a URL may resolve to: public, plus the configured host's own
        kind when that is loopback or private (a local server or proxy)."""
        kinds = {"global"}
        for address in self.base_addresses():
            kind = address_kind(address)
            if kind in ("loopback", "private"):
                kinds.add(kind)
        return kinds

    def check_address(self, host: str, address: str, url: Any = None) -> None:
        if address.split("%", 1)[0] in self.base_addresses():
            return
        kind = address_kind(address)
        if kind not in self.allowed_kinds():
            where = shown(url) if url is not None else host
            what = f"{address} is" if host.strip("[]") == address else f"{host} is {address},"
            raise OutboundRefused(
                f"refused to connect to {where}: {what} a {kind} address "
                f"(only public addresses{self._local_note()} may be reached from a "
                f"{self.who} answer)",
                "a provider or redirect named an internal address; if you run the "
                "service on this network yourself, set base_url to it",
            )

    def _local_note(self) -> str:
        extra = sorted(self.allowed_kinds() - {"global"})
        return f" and {'/'.join(extra)} ones like the configured server" if extra else ""

    def allowed_addresses(self, host: str, port: int, url: Any = None) -> list[str]:
        """The addresses ``host`` resolves to, each checked (raises when one is refused:
        a name that mixes a public and an internal address is not used)."""
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
            addresses = [host]
        except ValueError:
            try:
                addresses = list(self.resolver(host, port))
            except OSError as exc:
                raise OutboundError(
                    f"cannot resolve {host} ({shown(url) if url is not None else host}): "
                    f"{type(exc).__name__}",
                    f"check the network or the {self.who} base_url",
                ) from None
        if not addresses:
            raise OutboundError(f"{host} resolves to no address", "check the URL")
        for address in addresses:
            self.check_address(host, address, url)
        return addresses

    def check_url(self, url: Any, *, resolve: bool = True) -> None:
        """Scheme, then (``resolve``) every address of the host."""
        origin = Origin.of(url)
        if origin.scheme not in ("http", "https") or not origin.host:
            raise OutboundRefused(
                f"refused to fetch {shown(url)}: only http(s) URLs are fetched",
                f"the {self.who} answer named an unsupported URL; report it to the provider",
            )
        if resolve:
            self.allowed_addresses(origin.host, origin.port, url)

    def carries_secret(self, text: str) -> bool:
        return any(secret in text for secret in self.secrets)

    def deadline_in(self, seconds: float) -> float:
        return self.clock() + seconds

    # -- clients -------------------------------------------------------------------

    def client(self, *, follow_redirects: bool = False) -> httpx.Client:
        """An httpx client whose every request (and redirect hop) obeys the policy.
        ``follow_redirects=True`` is for SDKs (e.g. ``openai.OpenAI(http_client=...)``)."""
        if follow_redirects not in self._clients:
            import httpx

            from llmpopcorn.backends.outbound_transport import GuardedTransport

            timeout = httpx.Timeout(self.request_timeout, connect=min(10.0, self.request_timeout))
            self._clients[follow_redirects] = httpx.Client(
                transport=GuardedTransport(self, self._transport),
                timeout=timeout,
                follow_redirects=follow_redirects,
                max_redirects=MAX_REDIRECTS,
                trust_env=False,  # no proxy from the environment: addresses are checked here
            )
        return self._clients[follow_redirects]

    def sdk_client(self) -> httpx.Client:
        return self.client(follow_redirects=True)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # -- requests --------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        deadline: float | None = None,
        max_bytes: int | None = None,
    ) -> httpx.Response:
        """One request with its redirects, the body read within ``max_bytes`` and before
        ``deadline`` (default: ``request_timeout`` from now). Credentials go only to the
        configured origin, and only when ``auth``. Any status is returned."""
        import httpx

        if deadline is None:
            deadline = self.deadline_in(self.request_timeout)
        extensions = {DEADLINE: deadline, MAX_BYTES: max_bytes or self.max_bytes}
        client = self.client()
        request = client.build_request(
            method,
            url,
            json=json,
            params=self._params_for(url, auth, params),
            headers={**(headers or {}), **self._headers_for(url, auth)},
            extensions=extensions,
        )
        for _hop in range(MAX_REDIRECTS + 1):
            response = client.send(request, stream=True)
            follow = response.next_request
            if follow is None:
                break
            response.close()
            request = self._redirected(follow, auth, extensions)
        else:
            raise OutboundError(
                f"{self.who} redirected more than {MAX_REDIRECTS} times: {shown(url)}",
                "report it to the provider",
            )
        try:
            response.read()
        except (OutboundError, httpx.HTTPError):
            response.close()
            raise
        return response

    def download(
        self,
        url: str,
        *,
        deadline: float | None = None,
        max_bytes: int | None = None,
        auth: bool = False,
    ) -> bytes:
        """The body of ``url`` (GET), or :class:`OutboundHTTPError` for an error status;
        no credentials unless ``auth`` and the URL is on the configured origin."""
        response = self.request(
            "GET",
            url,
            headers={"Accept-Encoding": "identity"},
            auth=auth,
            deadline=deadline,
            max_bytes=max_bytes,
        )
        if response.status_code >= 400:
            raise OutboundHTTPError(
                f"{self.who} answered HTTP {response.status_code} for {shown(url)}",
                "retry later; the link may have expired",
                status=response.status_code,
            )
        return response.content

    def _headers_for(self, url: Any, auth: bool) -> dict[str, str]:
        return dict(self.headers) if auth and self.same_origin(url) else {}

    def _params_for(self, url: Any, auth: bool, params: Mapping[str, Any] | None) -> Any:
        """The URL's own query, then ``params``, then the credentials (configured origin
        only). Returned whole because httpx replaces a URL's query by ``params=``."""
        import httpx

        extra = dict(params or {})
        if auth and self.same_origin(url):
            extra.update(self.params)
        if not extra:
            return None  # the URL keeps its query as it is
        own = [(k, v) for k, v in httpx.URL(str(url)).params.multi_items() if k not in extra]
        return [*own, *extra.items()]

    def _redirected(self, follow: httpx.Request, auth: bool, extensions: dict) -> httpx.Request:
        """The next hop without any credential, then the policy's own when it is the
        configured origin again."""
        for name in list(follow.headers):
            if name.lower() in self.secret_headers:
                del follow.headers[name]
        follow.headers.update(self._headers_for(follow.url, auth))
        follow.extensions = {**follow.extensions, **extensions}
        return follow


# -- pictures ----------------------------------------------------------------------------------


def open_image(data: bytes, what: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """``data`` as an RGB picture; one over ``max_pixels`` (or a decompression bomb) is
    :class:`OutboundTooLarge`, an unreadable one :class:`OutboundError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise _image_too_large(what, f"{image.width}x{image.height}", max_pixels)
            image.load()
    except Image.DecompressionBombError:
        raise _image_too_large(what, "", max_pixels) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise OutboundError(f"{what} is not a readable image: {exc}") from None
    return image.convert("RGB")


def _image_too_large(what: str, size: str, limit: int) -> OutboundTooLarge:
    size = f" ({size} pixels)" if size else ""
    return OutboundTooLarge(
        f"the provider's image is too large: {what}{size}; at most {limit:,} pixels are opened",
        "ask the provider for a smaller size (width/height options) and retry",
    )


def mebibytes(value: float | None) -> int | None:
    """An option in MiB as bytes (None stays None)."""
    return None if value is None else int(math.ceil(value * 1024 * 1024))


#: the policy's vocabulary lives in :mod:`llmpopcorn.backends.origins` (shared with the
#: transport without an import cycle); backends import all of it from here
__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_IMAGE_PIXELS",
    "Origin",
    "OutboundError",
    "OutboundHTTPError",
    "OutboundPolicy",
    "OutboundRefused",
    "OutboundTimeout",
    "OutboundTooLarge",
    "address_kind",
    "mebibytes",
    "open_image",
    "shown",
    "system_resolver",
]
