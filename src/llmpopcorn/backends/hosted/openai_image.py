"""Covers from the OpenAI Images API (``POST /images/generations``) through the official
``openai`` client: OpenAI itself or any server that speaks the same API (``base_url``).

Options: ``model`` (gpt-image-1, gpt-image-1-mini, dall-e-3, dall-e-2, or any name a
compatible server knows), ``size`` and ``quality``, checked against the model's
documented values. GPT image models always answer with base64 PNGs; DALL-E is asked
for base64 too. The portrait size is centre-cropped to the 9:16 cover (never stretched).
Refusals (``moderation_blocked``, ``content_policy_violation``) are reported as such;
``insufficient_quota`` is an empty balance, not something to retry.
"""

from __future__ import annotations

import base64
import logging
import os
from typing import Any, ClassVar

from pydantic import Field

from llmpopcorn.backends.base import ImageBackend, ImageRequest
from llmpopcorn.backends.hosted.base import (
    RETRYABLE_STATUS,
    ContentRefusedError,
    HostedBackend,
    HostedError,
    HostedOptions,
    HostedTimeoutError,
    _is_quota,
    open_image,
    retry_after_seconds,
    to_cover,
)
from llmpopcorn.backends.outbound import OutboundError
from llmpopcorn.core.errors import ConfigError

log = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
_CHECKED = "OpenAI image pricing, read 2026-11-25"

# model -> (allowed sizes, allowed qualities, default size, default quality,
#           {quality: (USD square 1024x1024, USD any other size)}, verified)
MODELS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, str, dict, bool]] = {
    "gpt-image-1": (
        ("1024x1024", "1024x1536", "1536x1024", "auto"),
        ("low", "medium", "high", "auto"),
        "1024x1536",
        "medium",
        {"low": (0.011, 0.016), "medium": (0.042, 0.063), "high": (0.167, 0.25)},
        True,
    ),
    "gpt-image-1-mini": (
        ("1024x1024", "1024x1536", "1536x1024", "auto"),
        ("low", "medium", "high", "auto"),
        "1024x1536",
        "medium",
        {"low": (0.005, 0.006), "medium": (0.011, 0.015), "high": (0.036, 0.052)},
        False,
    ),
    "dall-e-3": (
        ("1024x1024", "1792x1024", "1024x1792"),
        ("standard", "hd"),
        "1024x1792",
        "standard",
        {"standard": (0.04, 0.08), "hd": (0.08, 0.12)},
        True,
    ),
    "dall-e-2": (
        ("256x256", "512x512", "1024x1024"),
        ("standard",),
        "1024x1024",
        "standard",
        {"standard": (0.02, 0.02)},
        True,
    ),
}
REFUSAL_CODES = ("moderation_blocked", "content_policy_violation")


class OpenAIImageOptions(HostedOptions):
    request_safe: ClassVar[frozenset[str]] = HostedOptions.request_safe | {"size", "quality"}
    model: str | None = Field("gpt-image-1", description="image model")
    size: str | None = Field(None, description="WIDTHxHEIGHT (default: the model's portrait)")
    quality: str | None = Field(None, description="gpt-image: low/medium/high; dall-e-3: hd")


class OpenAIImage(HostedBackend, ImageBackend):
    name = "openai-image"
    description = "OpenAI Images API (gpt-image-1, dall-e-3) or a compatible server (paid)"
    provider = "openai"
    key_envs = ("POPCORN_IMAGE_API_KEY", "OPENAI_API_KEY")
    modules = ("openai",)
    options_model = OpenAIImageOptions
    opts: OpenAIImageOptions
    default_model: ClassVar[str] = "gpt-image-1"

    def __init__(self, opts: OpenAIImageOptions, *, client: Any = None, **kw: Any):
        super().__init__(opts, **kw)
        self._client = client
        self.size, self.quality = self._validate()

    def _validate(self) -> tuple[str, str | None]:
        model = self.model_id()
        spec = MODELS.get(model)
        size, quality = self.opts.size, self.opts.quality
        if spec is None:  # a compatible server's own model: pass through what is given
            if size and size != "auto" and not _is_size(size):
                raise ConfigError(
                    f"--image-opt size={size!r} is not WIDTHxHEIGHT", "e.g. size=1024x1536"
                )
            return size or "1024x1536", quality
        sizes, qualities, default_size, default_quality, _, _ = spec
        size, quality = size or default_size, quality or default_quality
        if size not in sizes:
            raise ConfigError(
                f"{model} does not make {size} images",
                f"--image-opt size= one of {', '.join(sizes)}",
            )
        if quality not in qualities:
            raise ConfigError(
                f"{model} has no quality {quality!r}",
                f"--image-opt quality= one of {', '.join(qualities)}",
            )
        return size, quality

    def model_id(self) -> str:
        return self.opts.model or self.default_model

    @property
    def base_url(self) -> str:
        return (self.opts.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")

    def api_base(self) -> str:
        return self.base_url

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def options(self) -> dict[str, Any]:
        data = super().options()
        data.update(size=self.size, quality=self.quality, base_url=self.base_url)
        return data

    def estimate(self) -> float | None:
        spec = MODELS.get(self.model_id())
        if self.opts.price is not None:
            return self.opts.price
        if spec is None:
            return None
        prices = spec[4]
        quality = self.quality if self.quality in prices else max(prices, key=lambda q: prices[q])
        square, other = prices[quality]
        return square if self.size == "1024x1024" else other

    @property
    def client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=self._api_key or "missing",
                timeout=self.opts.request_timeout,
                max_retries=0,  # retried here, so that a spent quota is not retried
                # every request and redirect hop under the outbound policy: the key only
                # to base_url, a byte cap and a total deadline per call
                http_client=self.outbound.sdk_client(),
            )
        return self._client

    def _call(self, kwargs: dict[str, Any]) -> Any:
        import openai

        retries = self.opts.max_retries
        url = f"{self.base_url}/images/generations"
        for attempt in range(retries + 1):
            last = attempt == retries
            try:
                return self.client.images.generate(**kwargs)
            except openai.APITimeoutError:
                if last:
                    raise HostedTimeoutError(
                        f"openai did not answer within {self.opts.request_timeout:g} s "
                        f"({url}) after {retries} retries",
                        "raise --image-opt request_timeout=SECONDS or retry later",
                    ) from None
                self._wait(attempt, None, "timeout")
            except openai.APIConnectionError as exc:
                if isinstance(exc.__cause__, OutboundError):
                    raise exc.__cause__ from None  # refused or cut off by the policy
                if last:
                    raise HostedError(
                        f"cannot reach {url}", "check the network or --image-opt base_url"
                    ) from None
                self._wait(attempt, None, "connection error")
            except openai.APIStatusError as exc:
                body = _text(exc)
                status = exc.status_code
                if status in RETRYABLE_STATUS and not _is_quota(body) and not last:
                    self._wait(attempt, retry_after_seconds(exc.response.headers), str(status))
                    continue
                raise self.classify(status, body, url) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def classify(self, status: int, body: str, url: str) -> Exception:
        low = body.lower()
        if status in (400, 403) and any(code in low for code in REFUSAL_CODES):
            detail = _message(body) or "the request was rejected by the safety system"
            self.last.update(refused=True, refusal=detail)
            return ContentRefusedError(
                f"openai refused the cover prompt under its content policy ({self.model_id()}): "
                f"{detail}",
                "rephrase the prompt (the run record keeps it) or try another model",
                detail=detail,
            )
        return super().classify(status, body, url)

    def generate(self, request: ImageRequest) -> Any:
        model = self.model_id()
        estimate = self.estimate()
        self.check_budget(estimate, f"the cover from {model}")
        kwargs: dict[str, Any] = {"model": model, "prompt": request.prompt, "n": 1}
        if self.size:
            kwargs["size"] = self.size
        if self.quality:
            kwargs["quality"] = self.quality
        if model.startswith("dall-e"):
            kwargs["response_format"] = "b64_json"
        self.last = {"provider": self.provider, "model": model}
        self.begin_job()
        response = self._call(kwargs)
        data = list(getattr(response, "data", None) or [])
        if not data:
            raise HostedError(f"openai returned no image for {model}")
        item = data[0]
        if getattr(item, "b64_json", None):
            raw = base64.b64decode(item.b64_json)
        elif getattr(item, "url", None):
            raw = self.download(item.url)
        else:
            raise HostedError(f"openai returned an image with neither data nor URL ({model})")
        picture = open_image(raw, f"the image from {model}")
        self.charge(estimate)
        self.last.update(
            request_id=getattr(response, "_request_id", None),
            cost_estimate_usd=estimate,
            width=picture.width,
            height=picture.height,
            revised_prompt=getattr(item, "revised_prompt", None),
        )
        usage = getattr(response, "usage", None)
        if usage is not None and hasattr(usage, "model_dump"):
            self.last["usage"] = usage.model_dump(exclude_none=True)
        return to_cover(picture)


def _is_size(text: str) -> bool:
    w, sep, h = text.partition("x")
    return bool(sep) and w.isdigit() and h.isdigit()


def _text(exc: Any) -> str:
    try:
        return exc.response.text
    except Exception:  # noqa: BLE001
        return str(getattr(exc, "message", ""))


def _message(body: str) -> str:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return body[:300]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or "")[:300]
    return ""
