"""Any OpenAI-compatible chat-completions server, through the official ``openai`` client.

Presets fill in the base URL, the usual API-key variable and a default model for
DeepSeek, OpenAI, Ollama, vLLM and the llama.cpp server. Transient failures
(429, 5xx, timeouts, dropped connections) are retried by the client with
exponential backoff, at most ``llm_max_retries`` times; 401/403/404 fail at once
with a message naming the setting to fix. The API key never appears in records,
logs or error messages.
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

from ...errors import ConfigError, LLMError
from ...types import ChatRequest
from ..base import LLM, Availability

log = logging.getLogger(__name__)


class OpenAICompatLLM(LLM):
    name = "openai"
    description = "any OpenAI-compatible chat-completions endpoint (set --llm-base-url)"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    default_model: ClassVar[str | None] = "gpt-4o-mini"
    key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    needs_key: ClassVar[bool] = True

    def __init__(
        self,
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        client: Any = None,
    ):
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self._model = model or self.default_model
        self._api_key = api_key or (os.environ.get(self.key_env) if self.key_env else None)
        self.timeout = timeout
        self.max_retries = max_retries
        self._client = client

    @classmethod
    def from_settings(cls, settings) -> OpenAICompatLLM:
        return cls(
            model=settings.llm_model,
            base_url=settings.llm_base_url,
            api_key=settings.api_key(),
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
        )

    @classmethod
    def availability(cls, settings=None) -> Availability:
        if settings is not None and settings.api_key():
            return Availability(True)
        if cls.needs_key and not (cls.key_env and os.environ.get(cls.key_env)):
            where = (
                f"POPCORN_LLM_API_KEY or {cls.key_env}" if cls.key_env else "POPCORN_LLM_API_KEY"
            )
            return Availability(False, f"no API key: set {where}")
        return Availability(True, f"needs a server at {cls.default_base_url} (or --llm-base-url)")

    # -- helpers --------------------------------------------------------------------

    def model_id(self) -> str | None:
        return self._model

    def options(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "timeout": self.timeout, "max_retries": self.max_retries}

    def _key_hint(self) -> str:
        names = ["POPCORN_LLM_API_KEY"] + ([self.key_env] if self.key_env else [])
        return f"set {' or '.join(names)} to a valid key for {self.base_url}"

    def _scrub(self, text: str) -> str:
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "***")
        return text

    @property
    def client(self):
        if self._client is None:
            import openai

            key = self._api_key
            if not key:
                if self.needs_key:
                    raise ConfigError(
                        f"no API key for the '{self.name}' LLM backend", self._key_hint()
                    )
                key = "not-needed"  # local servers ignore it, the client insists on one
            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=key,
                timeout=self.timeout,
                max_retries=self.max_retries,
            )
        return self._client

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

    def _convert(self, exc: Exception) -> LLMError:
        import openai

        url, model = self.base_url, self._model
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
                f"rate limited by {url} after {self.max_retries} retries (HTTP 429)",
                "wait and rerun, or raise --llm-max-retries",
            )
        if isinstance(exc, openai.APITimeoutError):
            return LLMError(
                f"no answer from {url} within {self.timeout:g} s after {self.max_retries} retries",
                "raise --llm-timeout or check the server's load",
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

    def complete(self, request: ChatRequest) -> str:
        import openai

        model = self._resolve_model()
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": [m.model_dump() for m in request.messages],
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            kwargs["seed"] = request.seed
        try:
            response = self.client.chat.completions.create(**kwargs)
        except openai.OpenAIError as exc:
            raise self._convert(exc) from None
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""


class DeepSeekLLM(OpenAICompatLLM):
    name = "deepseek"
    description = "DeepSeek API (deepseek-chat, deepseek-reasoner)"
    default_base_url = "https://api.deepseek.com"
    default_model = "deepseek-chat"
    key_env = "DEEPSEEK_API_KEY"


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
