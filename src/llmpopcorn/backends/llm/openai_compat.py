"""Any OpenAI-compatible chat-completions server, through the official ``openai`` client.

Presets fill in the base URL, the usual API-key variable and a default model for
DeepSeek, OpenAI, Ollama, vLLM and the llama.cpp server.

Time is bounded. Each request waits at most ``llm_timeout`` seconds (default 120),
enforced on the wall clock (a server that trickles bytes cannot stretch it), and one
call, retries and backoff included, ends after ``llm_deadline`` seconds (default
120): a stalled server holds a run for about two minutes, never more. Transient
failures (408, 409, 429, 5xx, timeouts, dropped connections) are retried with
exponential backoff (0.5 s, 1 s, 2 s... at most 8 s), at most ``llm_max_retries``
times and only while the deadline allows; 401/403/404 fail at once with a message
naming the setting to fix. A 429 that says the key's quota is used up (OpenAI's
``insufficient_quota``) and DeepSeek's HTTP 402 "Insufficient Balance" are not
retried either: waiting does not refill a balance, so they fail at once with an
:class:`LLMError` saying so, whose ``code`` is ``insufficient_quota`` (a batch
recognises it and pauses).

A reply that is not a chat completion (an HTML page with HTTP 200, JSON of another
shape) is an :class:`LLMError` naming the URL to check. The API key never appears in
records, logs or error messages, even when a server echoes it in its reply: replies
go through :func:`llmpopcorn.core.redact.scrub`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from llmpopcorn.backends.base import LLM, Availability
from llmpopcorn.core.errors import ConfigError, LLMError
from llmpopcorn.core.redact import register_secret, scrub
from llmpopcorn.core.types import ChatRequest, Completion

log = logging.getLogger(__name__)

#: HTTP statuses worth retrying (as the openai client does)
RETRY_STATUS = frozenset({408, 409, 429})
#: extra seconds the wall-clock guard grants a request beyond its own timeout
WALL_CLOCK_GRACE = 2.0
MAX_BACKOFF = 8.0
_CLIENT_LOCK = threading.Lock()
#: what a 429/402 says when the key's quota or balance is used up (not a rate limit)
QUOTA_MARKERS = (
    "insufficient_quota",
    "exceeded your current quota",
    "insufficient balance",
    "insufficient_balance",
)


def quota_exhausted(exc: BaseException) -> bool:
    """True when an API error says the key's quota or balance is used up: HTTP 402
    (DeepSeek: "Insufficient Balance"), or a 429 whose code, type or message says
    ``insufficient_quota`` (OpenAI: "You exceeded your current quota"). An ordinary
    rate-limit 429 ("Rate limit reached ... requests per min") is not."""
    status = getattr(exc, "status_code", None)
    if status == 402:
        return True
    if status != 429:
        return False
    if getattr(exc, "code", None) == "insufficient_quota":
        return True
    if getattr(exc, "type", None) == "insufficient_quota":
        return True
    text = f"{getattr(exc, 'message', '')} {getattr(exc, 'body', '') or ''}".lower()
    return any(marker in text for marker in QUOTA_MARKERS)


class RequestThreads:
    """Reusable daemon threads that run requests while their callers wait on the wall
    clock. Starting a thread for every request cost about 0.35 ms of CPU a call (under
    the interpreter lock, so it slowed every other item of a batch); an idle thread is
    reused instead, a new one started only when none is idle (so a stalled request
    never delays another), and a thread idle for ``idle_s`` ends."""

    def __init__(self, idle_s: float = 60.0):
        self.idle_s = idle_s
        self._idle: list[queue.SimpleQueue] = []  # the inboxes of idle threads
        self._lock = threading.Lock()
        self.started = 0  # threads started so far (for tests)

    def run(self, fn: Callable[[], None]) -> Any:
        """Start ``fn()``; returns a lock that is released when it has returned."""
        done = threading.Lock()
        done.acquire()
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                inbox = queue.SimpleQueue()
                self.started += 1
                threading.Thread(
                    target=self._serve, args=(inbox,), name="popcorn-llm-request", daemon=True
                ).start()
        inbox.put((fn, done))
        return done

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        while True:
            try:
                fn, done = inbox.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # nobody picked this thread meanwhile: end
                        self._idle.remove(inbox)
                        return
                continue  # picked just now: its job is on the way
            try:
                fn()
            finally:
                done.release()
                with self._lock:
                    self._idle.append(inbox)


_REQUEST_THREADS = RequestThreads()


class OpenAICompatLLM(LLM):
    name = "openai"
    description = "any OpenAI-compatible chat-completions endpoint (set --llm-base-url)"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    default_model: ClassVar[str | None] = "gpt-4o-mini"
    key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    needs_key: ClassVar[bool] = True
    #: ask for ``response_format`` with the answer's JSON schema (OpenAI, vLLM, the
    #: llama.cpp server and Ollama hold replies to it); a 400/422 to it falls back to
    #: parsing the text, once per backend
    structured_output: ClassVar[bool] = True
    request_model: ClassVar[bool] = True  # a model name at the remote API, never a path

    def __init__(
        self,
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        deadline: float = 120.0,
        client: Any = None,
    ):
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self._model = model or self.default_model
        self._api_key = api_key or (os.environ.get(self.key_env) if self.key_env else None)
        register_secret(self._api_key)
        self.timeout = timeout
        self.max_retries = max_retries
        self.deadline = deadline
        self._client = client
        self.schema_refused = False

    @classmethod
    def from_settings(cls, settings) -> OpenAICompatLLM:
        return cls(
            model=settings.llm_model,
            base_url=settings.llm_base_url,
            api_key=settings.api_key(),
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            deadline=getattr(settings, "llm_deadline", 120.0),
        )

    @classmethod
    def server_url(cls, settings=None) -> str:
        """The URL this backend would call: the configured one when it is the chosen LLM."""
        if settings is not None and settings.llm == cls.name and settings.llm_base_url:
            return str(settings.llm_base_url).rstrip("/")
        return cls.default_base_url

    @classmethod
    def availability(cls, settings=None) -> Availability:
        url = cls.server_url(settings)
        if settings is not None and settings.api_key():
            return Availability(True, server=url)
        if cls.needs_key and not (cls.key_env and os.environ.get(cls.key_env)):
            where = (
                f"POPCORN_LLM_API_KEY or {cls.key_env}" if cls.key_env else "POPCORN_LLM_API_KEY"
            )
            return Availability(False, f"no API key: set {where}")
        return Availability(True, f"needs a server at {url} (or --llm-base-url)", server=url)

    @classmethod
    def probe(cls, settings, timeout: float) -> Availability | None:
        """Ask a local server (loopback or private address, or ``localhost``) for its
        models, without a key, within ``timeout`` seconds; a remote API is not probed
        (None): its key is checked on first use. Any HTTP answer counts as reachable."""
        import httpx

        from llmpopcorn.backends.outbound import OutboundError, OutboundPolicy, address_kind

        url = cls.server_url(settings)
        host = (httpx.URL(url).host or "").strip("[]")
        try:
            local = host == "localhost" or address_kind(host) in ("loopback", "private")
        except ValueError:  # a host name: not resolved here (a probe never waits on DNS)
            local = False
        if not local:
            return None
        policy = OutboundPolicy(url, who=f"the {cls.name} server", request_timeout=timeout)
        try:
            answer = policy.request("GET", f"{url}/models", auth=False, max_bytes=1 << 20)
        except (OutboundError, httpx.HTTPError) as exc:
            reason = f"no answer from {url} within {timeout:g} s ({type(exc).__name__})"
            return Availability(False, f"{reason}: start the server or set --llm-base-url")
        finally:
            policy.close()
        return Availability(True, f"{url} answered (HTTP {answer.status_code})", server=url)

    # -- helpers --------------------------------------------------------------------

    def model_id(self) -> str | None:
        return self._model

    def options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "deadline": self.deadline,
        }

    def _key_hint(self) -> str:
        names = ["POPCORN_LLM_API_KEY"] + ([self.key_env] if self.key_env else [])
        return f"set {' or '.join(names)} to a valid key for {self.base_url}"

    def _scrub(self, text: str) -> str:
        """For error messages: every configured key, and this client's even if short."""
        text = scrub(text)
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "***")
        return text

    @property
    def client(self):
        if self._client is not None:
            return self._client
        with _CLIENT_LOCK:  # K threads may race for the first client: build one
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self):
        import openai

        key = self._api_key
        if not key:
            if self.needs_key:
                raise ConfigError(f"no API key for the '{self.name}' LLM backend", self._key_hint())
            key = "not-needed"  # local servers ignore it, the client insists on one
        return openai.OpenAI(
            base_url=self.base_url,
            api_key=key,
            timeout=self.timeout,
            max_retries=0,  # retried in complete(), within the deadline
        )

    def _resolve_model(self) -> str:
        if self._model:
            return self._model
        # local servers usually serve exactly one model: use it
        try:
            models = [m.id for m in self.client.models.list()]
        except Exception as exc:  # noqa: BLE001 - converted to a clear error below
            raise self._convert(exc) from None
        if len(models) == 1:
            self._model = models[0]
            return self._model
        raise ConfigError(
            f"no model chosen for {self.base_url}"
            + (f"; it serves: {', '.join(models[:10])}" if models else ""),
            "pass --llm-model NAME or set POPCORN_LLM_MODEL",
        )

    def _convert(self, exc: Exception, tries: int = 1) -> LLMError:
        import openai

        url, model = self.base_url, self._model
        retried = f" ({tries} attempt(s); one call may take {self.deadline:g} s)"
        if quota_exhausted(exc):
            detail = self._scrub(str(getattr(exc, "message", "")))[:200]
            error = LLMError(
                f"the API key's quota or balance at {url} is used up "
                f"(HTTP {exc.status_code}: {detail})",
                "top up the account or use another key (POPCORN_LLM_API_KEY), then "
                "`popcorn batch --resume ID` finishes a paused batch",
            )
            # what llmpopcorn.runs.driver.is_quota_error looks for; attributes, unlike
            # __cause__, survive pickling (a Ray worker hands its error back pickled)
            error.code, error.status_code = "insufficient_quota", exc.status_code
            return error
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return LLMError(
                f"the server at {url} rejected the API key (HTTP {exc.status_code})",
                self._key_hint(),
            )
        if isinstance(exc, openai.NotFoundError):
            return LLMError(
                f"model '{model}' or the chat endpoint was not found at {url} (HTTP 404)",
                "check --llm-model / POPCORN_LLM_MODEL and --llm-base-url / POPCORN_LLM_BASE_URL "
                "(OpenAI-compatible URLs usually end in /v1)",
            )
        if isinstance(exc, openai.RateLimitError):
            return LLMError(
                f"rate limited by {url} (HTTP 429){retried}",
                "wait and rerun, or raise --llm-max-retries / --llm-deadline",
            )
        if isinstance(exc, openai.APITimeoutError):
            return _with_reason(
                "timeout",
                f"no answer from {url} within {self.timeout:g} s a request{retried}",
                "check the server's load, or raise --llm-timeout / --llm-deadline "
                "(POPCORN_LLM_TIMEOUT / POPCORN_LLM_DEADLINE)",
            )
        if isinstance(exc, openai.APIConnectionError):
            return LLMError(
                f"cannot connect to {url}",
                "is the server running? check --llm-base-url / POPCORN_LLM_BASE_URL",
            )
        if isinstance(exc, openai.APIStatusError):
            detail = self._scrub(str(getattr(exc, "message", "")))[:300]
            return LLMError(
                f"the server at {url} answered HTTP {exc.status_code}: {detail}",
                "check the model's options (some reasoning models reject sampling settings)",
            )
        return LLMError(f"LLM call to {url} failed: {self._scrub(type(exc).__name__)}")

    @staticmethod
    def _transient(exc: Exception) -> bool:
        import openai

        if isinstance(exc, openai.APIConnectionError):  # includes timeouts
            return True
        if quota_exhausted(exc):  # waiting does not refill a balance
            return False
        status = getattr(exc, "status_code", None)
        return isinstance(status, int) and (status in RETRY_STATUS or status >= 500)

    def _request(self, client: Any, kwargs: dict[str, Any], timeout: float) -> Any:
        """One chat-completions request: the parsed JSON body (a dict, or the text of a
        reply that is not JSON). The official client's generic ``post`` (its documented
        way to call an endpoint as raw JSON) keeps its auth, headers and error classes
        but skips building and validating typed request and response models, which
        cost about as much CPU as the HTTP exchange itself (0.7 of 1.8 ms a call on a
        2-core machine, and a batch's K threads share one interpreter lock): only
        ``choices[0].message.content`` is read.
        A client without ``post`` (a stand-in with only ``chat.completions.create``)
        is called the typed way."""
        post = getattr(client, "post", None)
        if post is None:
            return client.chat.completions.create(**kwargs, timeout=timeout)
        import httpx

        response = post(
            "/chat/completions", body=kwargs, cast_to=httpx.Response, options={"timeout": timeout}
        )
        if "json" in response.headers.get("content-type", ""):
            try:
                return response.json()
            except ValueError:
                pass
        return response.text

    def _create(self, kwargs: dict[str, Any], timeout: float) -> Any:
        """One request, bounded on the wall clock: the client's own timeout covers a
        silent server, this guard one that trickles bytes. The request runs on one of
        the reusable daemon threads of :data:`_REQUEST_THREADS` (a stalled request never
        holds the process at exit: SIGTERM, Ctrl-C) while this thread waits."""
        import httpx
        import openai

        client = self.client
        box: list[Any] = []  # [value] or [None, error]

        def call() -> None:
            try:
                box.append(self._request(client, kwargs, timeout))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box.extend((None, exc))

        done = _REQUEST_THREADS.run(call)
        try:
            done.acquire(timeout=timeout + WALL_CLOCK_GRACE)
        finally:
            if not box:  # timed out or interrupted: abort the connection
                self._client = None
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing a half-broken client
                    pass
        if not box:
            raise openai.APITimeoutError(request=httpx.Request("POST", self.base_url))
        if len(box) > 1:
            raise box[1]
        return box[0]

    def _content(self, response: Any) -> str:
        """The text of a chat completion; anything else is a clear :class:`LLMError`."""

        choices = None if isinstance(response, str | bytes) else _field(response, "choices")
        if not isinstance(choices, list):
            if isinstance(response, str | bytes):
                body = response if isinstance(response, str) else response.decode(errors="replace")
                html = body.lstrip()[:1].startswith("<")
                what = "an HTML page" if html else "text that is not JSON"
                snippet = " ".join(self._scrub(body).split())[:120]
            else:
                what, snippet = "JSON without 'choices'", ""
            raise LLMError(
                f"the server at {self.base_url} answered with {what}, not a chat completion"
                + (f": {snippet!r}" if snippet else ""),
                "check --llm-base-url / POPCORN_LLM_BASE_URL: it must be the root of an "
                "OpenAI-compatible API (usually ending in /v1), not a web page or a proxy",
            )
        if not choices:
            return ""
        content = _field(_field(choices[0], "message"), "content")
        if content is None:
            return ""
        if not isinstance(content, str):
            raise LLMError(
                f"the server at {self.base_url} sent a reply whose content is a "
                f"{type(content).__name__}, not text",
                "check that --llm-base-url points at an OpenAI-compatible chat endpoint",
            )
        return scrub(content)  # a server may echo the key (keys under 8 characters are kept)

    def _response_format(self, request: ChatRequest) -> dict[str, Any] | None:
        """The ``response_format`` asking the server to hold its reply to the request's
        schema, where this server is asked for it (not after it refused once)."""
        if not (request.response_schema and self.structured_output and not self.schema_refused):
            return None
        schema = portable_schema(request.response_schema, reasoning=request.reasoning)
        return {
            "type": "json_schema",
            "json_schema": {"name": "idea", "schema": schema, "strict": True},
        }

    def complete(self, request: ChatRequest) -> Completion:
        kwargs: dict[str, Any] = {
            "model": self._resolve_model(),
            "messages": [m.model_dump() for m in request.messages],
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            kwargs["seed"] = request.seed
        response_format = self._response_format(request)
        if response_format:
            kwargs["response_format"] = response_format
        deadline = time.monotonic() + self.deadline
        try:
            response = self._call(kwargs, deadline)
        except _SchemaRefused as refused:
            # an old vLLM, a proxy or a provider with JSON mode only: ask as before, parse
            # the text, and do not ask this server for a schema again
            self.schema_refused = True
            log.info("%s refused response_format (%s); parsing replies", self.base_url, refused)
            kwargs.pop("response_format")
            response = self._call(kwargs, deadline)
        return self._completion(response, "response_format" in kwargs)

    def _call(self, kwargs: dict[str, Any], deadline: float) -> Any:
        """One chat completion, retried on transient errors within ``deadline``."""
        import openai

        tries = 0
        while True:
            tries += 1
            remaining = deadline - time.monotonic()
            try:
                return self._create(kwargs, timeout=max(0.1, min(self.timeout, remaining)))
            except openai.OpenAIError as exc:
                status = getattr(exc, "status_code", None)
                if "response_format" in kwargs and status in (400, 422):
                    raise _SchemaRefused(str(getattr(exc, "message", exc))[:200]) from None
                wait = min(MAX_BACKOFF, 0.5 * 2 ** (tries - 1))
                late = time.monotonic() + wait >= deadline
                if not self._transient(exc) or tries > self.max_retries or late:
                    raise self._convert(exc, tries) from None
                log.info("LLM call to %s failed (%s); retry in %.1f s", self.base_url, exc, wait)
                time.sleep(wait)

    def _completion(self, response: Any, schema: bool) -> Completion:
        """The reply, why it ended and its token counts (the server's words)."""
        text = self._content(response)
        choice = _field(response, "choices")[0] if _field(response, "choices") else None
        finish = _field(choice, "finish_reason")
        refusal = _field(_field(choice, "message"), "refusal")
        if finish == "content_filter" or (isinstance(refusal, str) and refusal):
            finish = "refused"
            text = text or scrub(refusal or "")
        usage = _field(response, "usage")
        return Completion(
            text=text,
            finish_reason=finish if isinstance(finish, str) else None,
            prompt_tokens=_count(_field(usage, "prompt_tokens")),
            completion_tokens=_count(_field(usage, "completion_tokens")),
            method="response_format" if schema else "parse",
        )


def _with_reason(reason: str, message: str, hint: str) -> LLMError:
    """An :class:`LLMError` with ``reason`` (``RunRecord.failure``'s vocabulary); an
    attribute, unlike ``__cause__``, survives pickling (a Ray worker's error)."""
    error = LLMError(message, hint)
    error.reason = reason
    return error


class _SchemaRefused(Exception):
    """The server answered 400/422 to a request with ``response_format``."""


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


#: what a server's JSON-schema mode is asked to enforce: the strictest common subset
#: (OpenAI's strict mode rejects length bounds; every field required, nothing else
#: allowed); the bounds are still checked when the reply is validated
_NOT_PORTABLE = ("minLength", "maxLength", "pattern", "minItems", "maxItems")


def portable_schema(schema: dict[str, Any], *, reasoning: bool = False) -> dict[str, Any]:
    """``schema`` without the keywords some servers refuse; with ``reasoning``, a first
    ``reasoning`` string, so a server that holds its whole reply to the schema still
    thinks before it answers (PE's chain of thought; the parser ignores the field)."""

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if k not in _NOT_PORTABLE}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    out = clean(schema)
    if reasoning:
        properties = {"reasoning": {"type": "string"}, **out.get("properties", {})}
        required = ["reasoning", *[r for r in out.get("required", []) if r != "reasoning"]]
        out = {**out, "properties": properties, "required": required}
    return out


class DeepSeekLLM(OpenAICompatLLM):
    name = "deepseek"
    description = "DeepSeek API (deepseek-chat, deepseek-reasoner)"
    default_base_url = "https://api.deepseek.com"
    default_model = "deepseek-chat"
    key_env = "DEEPSEEK_API_KEY"
    structured_output = False  # JSON mode only (no schema): the reply is parsed


class OllamaLLM(OpenAICompatLLM):
    name = "ollama"
    description = "a local Ollama server (OpenAI-compatible API on port 11434)"
    default_base_url = "http://127.0.0.1:11434/v1"
    default_model = None
    key_env = None
    needs_key = False


class VLLMLLM(OpenAICompatLLM):
    name = "vllm"
    description = "a vLLM OpenAI-compatible server (port 8000)"
    default_base_url = "http://127.0.0.1:8000/v1"
    default_model = None
    key_env = "VLLM_API_KEY"
    needs_key = False


class LlamaCppLLM(OpenAICompatLLM):
    name = "llamacpp"
    description = "a llama.cpp server (llama-server, port 8080)"
    default_base_url = "http://127.0.0.1:8080/v1"
    default_model = None
    key_env = None
    needs_key = False
