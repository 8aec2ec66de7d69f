"""One shared base for hosted image and video generators (OpenAI Images, fal's queue).

What every hosted backend shares lives here, so that each provider module is only
its protocol and its model table:

- the API key comes from the provider's usual variable or a ``POPCORN_*`` one, is
  sent in a header and nowhere else: never in options, records, logs or errors;
- HTTP through one :class:`llmpopcorn.backends.outbound.OutboundPolicy` per backend: the
  key only on the configured origin (a ``status_url``, a file link or a redirect elsewhere
  is fetched without it), public addresses only (unless the configured base URL is local),
  a byte cap per answer (``max_download_mb``) and a total deadline per call on the wall
  clock (``request_timeout``; downloads ``download_timeout``; every call of a job also
  within the job's ``timeout``);
- bounded retries on 429/5xx, timeouts and dropped connections, honouring
  ``Retry-After`` (capped at ``max_retry_wait`` seconds);
- error classes that say what happened: a rejected key or an empty balance
  (:class:`HostedAuthError`, naming the setting), a content-policy refusal
  (:class:`ContentRefusedError`, kept in the run record), a job that took too long;
- cost estimates from each model's published price and ``--max-cost``, checked
  when the backends are created (before the LLM or any provider is called) and
  again before each call; ``max_batch_cost`` caps what all hosted calls of a batch
  spend (:class:`CostLedger`, scoped by :func:`batch_budget`; a CLI process is one
  batch), and :func:`check_batch_cost` refuses a batch up front from its size;
- downloads that notice a truncated body and retry, and MP4 decoding with PyAV.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from llmpopcorn.backends.base import Availability
from llmpopcorn.backends.hosted.costs import (
    CostLedger,
    Price,
    batch_budget,
    check_batch_cost,
    check_cost,
    check_run_cost,
    current_ledger,
    estimate_run_cost,
)
from llmpopcorn.backends.hosted.errors import (
    ContentRefusedError,
    CostLimitError,
    HostedAuthError,
    HostedError,
    HostedTimeoutError,
)
from llmpopcorn.backends.hosted.files import (
    decode_data_uri,
    decode_mp4,
    open_image,
    png_data_uri,
    to_cover,
)
from llmpopcorn.backends.options import RendererOptions, selected_options, validate_options
from llmpopcorn.backends.outbound import (
    OutboundPolicy,
    OutboundTimeout,
    OutboundTooLarge,
    mebibytes,
)
from llmpopcorn.core.errors import MissingExtraError

if TYPE_CHECKING:  # pragma: no cover
    import httpx

    from llmpopcorn.core.settings import Settings

#: re-exported: the provider modules and tests import these from here
__all__ = [
    "ContentRefusedError",
    "CostLedger",
    "CostLimitError",
    "HostedAuthError",
    "HostedBackend",
    "HostedError",
    "HostedOptions",
    "HostedTimeoutError",
    "Price",
    "batch_budget",
    "check_batch_cost",
    "check_run_cost",
    "decode_mp4",
    "estimate_run_cost",
    "open_image",
    "png_data_uri",
    "to_cover",
]

log = logging.getLogger(__name__)

#: a model / endpoint id: slash-separated segments, none of them "." or ".."
ENDPOINT_ID = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}(/[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}){0,5}"
)
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: words in an error body that mean "the account has no money left", whatever the status
QUOTA_WORDS = (
    "insufficient_quota",
    "insufficient credit",
    "insufficient balance",
    "exhausted balance",
    "billing_hard_limit",
    "billing hard limit",
    "out of credit",
    "top up",
    "payment required",
)


# -- options ----------------------------------------------------------------------------


class HostedOptions(RendererOptions):
    """Options every hosted backend takes (``--image-opt`` / ``--video-opt KEY=VALUE``).
    A request may choose the model (an endpoint id, checked below); URLs, timeouts, caps
    and prices are server configuration."""

    request_safe: ClassVar[frozenset[str]] = frozenset({"model"})

    model: str | None = Field(None, description="the provider's model / endpoint id")
    base_url: str | None = Field(None, description="the provider's API URL (e.g. a proxy)")
    timeout: float = Field(600.0, gt=0, le=7200, description="seconds for the whole job")
    request_timeout: float = Field(
        60.0, gt=0, le=600, description="seconds for one HTTP call, its whole answer included"
    )
    download_timeout: float = Field(
        300.0, gt=0, le=3600, description="seconds for one file download (within timeout)"
    )
    max_download_mb: float = Field(
        200.0, gt=0, le=4096, description="largest answer or file accepted (MiB)"
    )
    poll_interval: float = Field(1.0, gt=0, le=60, description="first wait between polls")
    max_retries: int = Field(3, ge=0, le=10, description="retries on 429/5xx/timeouts")
    max_retry_wait: float = Field(60.0, ge=0, le=600, description="longest wait for one retry")
    price: float | None = Field(
        None, ge=0, description="override the price per the model's unit (USD), for estimates"
    )

    @field_validator("model", "i2v_model", check_fields=False)
    @classmethod
    def _endpoint_id(cls, value: str | None) -> str | None:
        """An endpoint id is a path on the configured origin: plain segments only."""
        if value is not None and not ENDPOINT_ID.fullmatch(value):
            raise ValueError("an endpoint id is NAME or OWNER/NAME/... (letters, digits, ._:-)")
        return value


# -- HTTP -------------------------------------------------------------------------------


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``, if present."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HostedBackend:
    """Mixin with the shared behaviour; provider bases set the class variables."""

    kind: ClassVar[str]
    name: ClassVar[str]
    provider: ClassVar[str] = ""  # "fal", "openai"
    #: where the key is read from, first match wins (a POPCORN_* one first)
    key_envs: ClassVar[tuple[str, ...]] = ()
    #: Python modules the backend needs (checked by availability, never imported there)
    modules: ClassVar[tuple[str, ...]] = ("httpx",)
    options_model: ClassVar[type[HostedOptions]] = HostedOptions
    #: what a call costs, as `popcorn backends` says it
    cost_note: ClassVar[str] = "paid"

    def __init__(
        self,
        opts: HostedOptions,
        *,
        api_key: str | None = None,
        max_cost: float | None = None,
        max_batch_cost: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: Any = None,
        resolver: Any = None,
    ):
        self.opts = opts
        self._api_key = api_key
        if api_key:  # scrubbed from every record, report, log line and error from now on
            from llmpopcorn.core.redact import register_secret

            register_secret(api_key)
        self.max_cost = max_cost
        self.max_batch_cost = max_batch_cost
        self._sleep = sleep  # tests pass a recorder: no real waiting
        self._clock = clock
        self._transport = transport
        self._resolver = resolver
        self._outbound: OutboundPolicy | None = None
        self._job_end: float | None = None  # the current job's deadline on _clock
        self.last: dict[str, Any] = {}  # the last call: request id, model, seconds, cost
        self.spent_usd = 0.0  # estimated, summed over this backend's calls
        self.calls = 0

    # -- construction -------------------------------------------------------------

    @classmethod
    def read_key(cls, env: Mapping[str, str] | None = None) -> str | None:
        env = os.environ if env is None else env
        for name in cls.key_envs:
            value = env.get(name, "").strip()
            if value:
                return value
        return None

    @classmethod
    def key_hint(cls) -> str:
        return f"set {' or '.join(cls.key_envs)} to a valid {cls.provider} API key"

    @classmethod
    def resolve(cls, settings: Settings | None) -> HostedOptions:
        raw = selected_options(settings, cls.kind, cls.name)
        return validate_options(cls.options_model, raw, kind=cls.kind, name=cls.name)

    @classmethod
    def from_settings(cls, settings: Settings) -> HostedBackend:
        for module in cls.modules:
            if not _installed(module):
                raise MissingExtraError(module, "hosted", f"the '{cls.name}' {cls.kind} backend")
        opts = cls.resolve(settings)
        backend = cls(
            opts,
            api_key=cls.read_key(),
            max_cost=getattr(settings, "max_cost", None),
            max_batch_cost=getattr(settings, "max_batch_cost", None),
        )
        backend.configure(settings)
        backend.require_key()
        check_run_cost(settings)  # before the LLM or any provider is called
        return backend

    def configure(self, settings: Settings) -> None:
        """Take what else the backend needs from the settings (e.g. --video-from-cover)."""

    @classmethod
    def availability(cls, settings: Settings | None = None) -> Availability:
        """Usable when the modules are installed and a key is set; no network call."""
        deps = Availability.needs_modules("hosted", *cls.modules)
        if not deps.ok:
            return deps
        if not cls.read_key():
            return Availability(False, f"no API key: {cls.key_hint()}")
        return Availability(
            True, f"key from {cls.key_source()}; calls {cls.provider} ({cls.cost_note})"
        )

    @classmethod
    def key_source(cls) -> str:
        return next((n for n in cls.key_envs if os.environ.get(n, "").strip()), "")

    @classmethod
    def estimate_for_settings(cls, settings: Settings) -> float | None:
        """The estimated USD of one call with these settings (no network)."""
        backend = cls(cls.resolve(settings))
        backend.configure(settings)
        return backend.estimate()

    def estimate(self) -> float | None:  # pragma: no cover - every provider overrides it
        return None

    def require_key(self) -> None:
        if not self._api_key:
            raise HostedAuthError(
                f"no API key for the '{self.name}' {self.kind} backend ({self.provider})",
                self.key_hint(),
            )

    # -- recording (never the key) ---------------------------------------------------

    def model_id(self) -> str | None:
        return self.opts.model

    def options(self) -> dict[str, Any]:
        data = self.opts.model_dump(exclude_none=True)
        data["provider"] = self.provider
        data["estimated_cost_usd"] = _round(self.estimate())
        data["spent_usd_estimate"] = round(self.spent_usd, 6)
        if self.last:
            data["last_call"] = dict(self.last)
        return data

    def scrub(self, text: str) -> str:
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "***")
        return text

    # -- budget ---------------------------------------------------------------------

    def check_budget(self, estimate: float | None, what: str) -> None:
        """Before each call: the run's cap, then what the batch has already spent."""
        check_cost(estimate, self.max_cost, what, self.kind)
        current_ledger().check(estimate, self.max_batch_cost, what, self.kind)

    def charge(self, estimate: float | None) -> None:
        self.calls += 1
        if estimate is not None:
            self.spent_usd += estimate
        current_ledger().add(estimate)

    # -- HTTP -----------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:  # pragma: no cover - providers override
        return {}

    def auth_params(self) -> dict[str, str]:
        """Query parameters that carry the key (a provider that takes it in the URL);
        like the headers, attached on the configured origin only."""
        return {}

    def api_base(self) -> str:  # pragma: no cover - providers override
        """The configured base URL: the only origin that ever gets the key."""
        raise NotImplementedError

    @property
    def outbound(self) -> OutboundPolicy:
        if self._outbound is None:
            extra = {"resolver": self._resolver} if self._resolver is not None else {}
            self._outbound = OutboundPolicy(
                self.api_base(),
                headers=self.auth_headers(),
                params=self.auth_params(),
                secrets=(self._api_key,) if self._api_key else (),
                who=self.provider,
                max_bytes=mebibytes(self.opts.max_download_mb) or 0,
                request_timeout=self.opts.request_timeout,
                clock=self._clock,
                transport=self._transport,
                **extra,
            )
        return self._outbound

    def begin_job(self) -> None:
        """Start the clock of one job: every call of it ends within ``timeout``."""
        self._job_end = self._clock() + self.opts.timeout

    def _deadline(self, download: bool) -> float:
        own = self.opts.download_timeout if download else self.opts.request_timeout
        deadline = self._clock() + own
        return deadline if self._job_end is None else min(deadline, self._job_end)

    def send(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        auth: bool = True,
        download: bool = False,
    ) -> httpx.Response:
        """One HTTP call with bounded retries on 429/5xx, timeouts, dropped connections and
        (``download``) bodies shorter than their Content-Length; other errors are
        classified (key, credit, refusal, ...). The key goes only to the configured origin
        (:mod:`llmpopcorn.backends.outbound`); every attempt has a total deadline."""
        import httpx

        retries = self.opts.max_retries
        for attempt in range(retries + 1):
            last = attempt == retries
            deadline = self._deadline(download)
            if deadline <= self._clock():
                raise self._timed_out(method, url, download)
            try:
                response = self.outbound.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    auth=auth,
                    deadline=deadline,
                    headers={"Accept-Encoding": "identity"} if download else None,
                )
                if download and response.status_code < 400:
                    _check_length(response)
            except (httpx.TimeoutException, OutboundTimeout) as exc:
                if last or self._job_over():
                    raise self._timed_out(method, url, download, retries) from None
                self._wait(attempt, None, type(exc).__name__)
                continue
            except (_Truncated, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if last:
                    got = f" ({exc})" if isinstance(exc, _Truncated) else ""
                    raise HostedError(
                        f"the answer from {self.provider} was cut short{got}: {_short(url)}",
                        "retry the run; the provider keeps results for a while",
                    ) from None
                self._wait(attempt, None, "cut-short answer")
                continue
            except httpx.TransportError as exc:
                if last:
                    raise HostedError(
                        f"cannot reach {self.provider} at {_short(url)}: "
                        f"{self.scrub(type(exc).__name__)}",
                        f"check the network or --{self.kind}-opt base_url",
                    ) from None
                self._wait(attempt, None, type(exc).__name__)
                continue
            if response.status_code < 400:
                return response
            body = _body_text(response)
            retryable = response.status_code in RETRYABLE_STATUS and not _is_quota(body)
            if retryable and not last and _provider_allows_retry(response.headers):
                self._wait(
                    attempt, retry_after_seconds(response.headers), str(response.status_code)
                )
                continue
            raise self.classify(response.status_code, body, url)
        raise AssertionError("unreachable")  # pragma: no cover

    def _job_over(self) -> bool:
        return self._job_end is not None and self._clock() >= self._job_end

    def _timed_out(
        self, method: str, url: str, download: bool, retries: int | None = None
    ) -> HostedTimeoutError:
        if self._job_over():
            return HostedTimeoutError(
                f"the {self.provider} job did not finish within {self.opts.timeout:g} s "
                f"({method} {_short(url)})",
                f"raise --{self.kind}-opt timeout=SECONDS or retry later",
            )
        limit = self.opts.download_timeout if download else self.opts.request_timeout
        option = "download_timeout" if download else "request_timeout"
        tries = f" after {retries} retries" if retries else ""
        return HostedTimeoutError(
            f"{self.provider} did not answer within {limit:g} s ({method} {_short(url)}){tries}",
            f"raise --{self.kind}-opt {option}=SECONDS or retry later",
        )

    def _wait(self, attempt: int, retry_after: float | None, why: str) -> None:
        backoff = min(self.opts.max_retry_wait, 0.5 * 2**attempt)
        wait = backoff if retry_after is None else min(self.opts.max_retry_wait, retry_after)
        if self._job_end is not None:  # never sleep past the job's end
            wait = max(0.0, min(wait, self._job_end - self._clock()))
        log.info("%s: %s, retrying in %.2f s", self.name, why, wait)
        self._sleep(wait)

    def classify(self, status: int, body: str, url: str) -> Exception:
        """An error for a final HTTP failure; providers add their refusal formats."""
        detail = self.scrub(body)[:400]
        if status == 402 or _is_quota(body):
            return HostedAuthError(
                f"{self.provider} says the account is out of credit (HTTP {status}): {detail}",
                f"top up the {self.provider} account that the key belongs to "
                f"({' / '.join(self.key_envs)}), or use another key",
            )
        if status in (401, 403):
            return HostedAuthError(
                f"{self.provider} rejected the API key (HTTP {status}): {detail}",
                self.key_hint(),
            )
        if status == 429:
            return HostedError(
                f"rate limited by {self.provider} after {self.opts.max_retries} retries (HTTP 429)",
                f"wait and rerun, or raise --{self.kind}-opt max_retries",
            )
        if status == 404:
            return HostedError(
                f"{self.provider} has no such endpoint or model: {_short(url)} (HTTP 404)",
                f"check --{self.kind}-opt model=... and base_url",
            )
        return HostedError(
            f"{self.provider} answered HTTP {status} for {_short(url)}: {detail}",
            f"check the options of the '{self.name}' backend (--{self.kind}-opt)",
        )

    # -- downloads ------------------------------------------------------------------

    def download(self, url: str, *, auth: bool = False) -> bytes:
        """The file at ``url`` (http(s) or a ``data:`` URI); a truncated body is retried,
        then reported as such."""
        if url.startswith("data:"):
            limit = mebibytes(self.opts.max_download_mb) or 0
            if len(url) * 3 // 4 > limit:
                raise OutboundTooLarge(
                    f"the {self.provider} answer holds a data URI over "
                    f"{self.opts.max_download_mb:g} MiB",
                    f"raise --{self.kind}-opt max_download_mb if that is expected",
                )
            return decode_data_uri(url)
        return self.send("GET", url, auth=auth, download=True).content


class _Truncated(Exception):
    def __init__(self, got: int, expected: int):
        super().__init__(f"{got} of {expected} bytes")


def _check_length(response: httpx.Response) -> None:
    expected = response.headers.get("content-length", "")
    if expected.isdigit() and len(response.content) != int(expected):
        raise _Truncated(len(response.content), int(expected))


# -- helpers ---------------------------------------------------------------------------


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _short(url: str) -> str:
    return url if len(url) <= 120 and not url.startswith("data:") else url[:60] + "..."


def _body_text(response: httpx.Response) -> str:
    try:
        return response.text
    except Exception:  # noqa: BLE001 - an undecodable body is reported as such
        return "<unreadable body>"


def _provider_allows_retry(headers: Mapping[str, str]) -> bool:
    """fal marks errors that a retry cannot fix (``X-Fal-Retryable: false``)."""
    for name in ("x-fal-retryable", "x-fal-needs-retry"):
        if headers.get(name, "").strip().lower() in ("false", "0", "no"):
            return False
    return True


def _is_quota(body: str) -> bool:
    low = body.lower()
    return any(word in low for word in QUOTA_WORDS)
