"""fal (fal.ai) image and video backends over its documented queue protocol.

Why fal rather than Replicate: fal serves every generator the paper names (FLUX, SD 3.5,
LTX-Video, Wan 2.2, HunyuanVideo) plus Kling under stable endpoint ids, each with its
price on the model page, and its queue protocol is three plain JSON calls, so it needs
no SDK and a local fake server can speak it in tests:

1. ``POST {queue}/{model_id}`` with the model's input -> ``request_id``, ``status_url``,
   ``response_url`` (header ``Authorization: Key $FAL_KEY``);
2. ``GET status_url`` until ``status`` is ``COMPLETED`` (``IN_QUEUE`` / ``IN_PROGRESS``
   before it), polled with growing waits up to the job timeout;
3. ``GET response_url`` -> the result (``images[].url`` or ``video.url``), then the file.

A content-policy refusal is an HTTP 422 whose ``detail`` items have
``type: content_policy_violation``; an empty balance is a 403 "User is locked. Reason:
Exhausted balance"; both are reported as such (see :mod:`.base`).
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar, Literal

from pydantic import Field

from llmpopcorn.backends.base import Clip, ImageBackend, ImageRequest, VideoBackend, VideoRequest
from llmpopcorn.backends.hosted.base import (
    ContentRefusedError,
    HostedBackend,
    HostedError,
    HostedOptions,
    HostedTimeoutError,
    Price,
    decode_mp4,
    open_image,
    png_data_uri,
    to_cover,
)
from llmpopcorn.core.errors import RenderError

log = logging.getLogger(__name__)

FAL_QUEUE_URL = "https://queue.fal.run"
_CHECKED = "fal model page, read 2026-11-25"

#: published prices by endpoint id (override any with --image-opt/--video-opt price=USD)
PRICES: dict[str, Price] = {
    "fal-ai/flux/schnell": Price(0.003, "megapixel", _CHECKED),
    "fal-ai/flux/dev": Price(0.025, "megapixel", _CHECKED),
    "fal-ai/stable-diffusion-v35-medium": Price(0.02, "megapixel", _CHECKED),
    # LTX-Video 0.9.8 13B distilled: $0.02 per second billed at 24 fps (read on the
    # endpoint family's extend page; assumed the same for text/image-to-video)
    "fal-ai/ltxv-13b-098-distilled": Price(
        0.02, "second", _CHECKED, verified=False, billing_fps=24
    ),
    "fal-ai/ltxv-13b-098-distilled/image-to-video": Price(
        0.02, "second", _CHECKED, verified=False, billing_fps=24
    ),
    # Wan 2.2 A14B: per video second at 16 fps; 720p (480p $0.04, 580p $0.06: see
    # WAN_RESOLUTION_PRICE)
    "fal-ai/wan/v2.2-a14b/text-to-video": Price(0.08, "second", _CHECKED, billing_fps=16),
    "fal-ai/wan/v2.2-a14b/image-to-video": Price(0.08, "second", _CHECKED, billing_fps=16),
    # HunyuanVideo: per video (not confirmed on a fal page here: an estimate)
    "fal-ai/hunyuan-video": Price(0.40, "video", "estimate", verified=False),
    "fal-ai/hunyuan-video-image-to-video": Price(0.40, "video", "estimate", verified=False),
    # Kling 2.5 turbo: the first 5 s, then per extra second
    "fal-ai/kling-video/v2.5-turbo/standard/image-to-video": Price(
        0.21, "first-5s", _CHECKED, per_extra_second=0.042
    ),
    "fal-ai/kling-video/v2.5-turbo/pro/text-to-video": Price(
        0.35, "first-5s", "estimate", verified=False, per_extra_second=0.07
    ),
}
WAN_RESOLUTION_PRICE = {"480p": 0.04, "580p": 0.06, "720p": 0.08}


class FalImageOptions(HostedOptions):
    request_safe: ClassVar[frozenset[str]] = HostedOptions.request_safe | {
        "width",
        "height",
        "steps",
        "guidance",
        "negative_prompt",
    }
    width: int = Field(720, ge=64, le=2048, description="generated width (9:16 by default)")
    height: int = Field(1280, ge=64, le=2048)
    steps: int | None = Field(None, ge=1, le=100)
    guidance: float | None = Field(None, ge=0, le=30)
    negative_prompt: str | None = None
    safety_checker: bool = Field(True, description="the provider's NSFW checker")


class FalVideoOptions(HostedOptions):
    request_safe: ClassVar[frozenset[str]] = HostedOptions.request_safe | {
        "i2v_model",
        "resolution",
        "aspect_ratio",
        "frames",
        "fps",
        "duration",
        "steps",
        "negative_prompt",
    }
    i2v_model: str | None = Field(None, description="endpoint used with --video-from-cover")
    resolution: Literal["480p", "580p", "720p"] | None = None
    aspect_ratio: Literal["9:16", "16:9", "1:1"] = "9:16"
    frames: int | None = Field(None, ge=9, le=1441, description="frames to generate")
    fps: int | None = Field(None, ge=4, le=60)
    duration: int | None = Field(None, ge=3, le=10, description="seconds (Kling: 5 or 10)")
    steps: int | None = Field(None, ge=1, le=100)
    negative_prompt: str | None = None
    safety_checker: bool = True


class FalBackend(HostedBackend):
    """The fal queue protocol: submit, poll with backoff, fetch the result."""

    provider = "fal"
    key_envs = ("POPCORN_FAL_KEY", "FAL_KEY")
    default_model: ClassVar[str]

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._api_key}"} if self._api_key else {}

    @property
    def queue_url(self) -> str:
        return (self.opts.base_url or FAL_QUEUE_URL).rstrip("/")

    def api_base(self) -> str:
        return self.queue_url

    def model_id(self) -> str:
        return self.opts.model or self.default_model

    def price_for(self, model: str) -> Price | None:
        if self.opts.price is not None:
            known = PRICES.get(model)
            unit = known.unit if known else ("megapixel" if self.kind == "image" else "video")
            fps = known.billing_fps if known else None
            return Price(self.opts.price, unit, "--opt price", billing_fps=fps)
        return PRICES.get(model)

    # -- the protocol ------------------------------------------------------------

    def run(self, model: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any], float]:
        """Submit ``payload`` to ``model``, wait for it, return (request id, result, s).
        The ``status_url`` / ``response_url`` fal names are used as given, but only its
        configured origin ever gets the key (:mod:`llmpopcorn.backends.outbound`)."""
        self.begin_job()
        started = self._clock()
        self.last = {"provider": self.provider, "model": model}
        submitted = self._json(self.send("POST", f"{self.queue_url}/{model}", json=payload))
        request_id = str(submitted.get("request_id") or "")
        if not request_id:
            raise HostedError(f"fal accepted the job for {model} but sent no request_id")
        app = "/".join(model.split("/")[:2])  # status/result omit the endpoint's subpath
        base = f"{self.queue_url}/{app}/requests/{request_id}"
        status_url = submitted.get("status_url") or f"{base}/status"
        response_url = submitted.get("response_url") or base
        self.last["request_id"] = request_id
        interval = self.opts.poll_interval
        polls = 0
        while True:
            status = self._json(self.send("GET", status_url))
            polls += 1
            state = status.get("status")
            if state == "COMPLETED":
                if status.get("error"):
                    raise self._job_error(model, request_id, status)
                break
            if state not in ("IN_QUEUE", "IN_PROGRESS"):
                raise HostedError(
                    f"fal reported an unknown status {state!r} for request {request_id} ({model})"
                )
            if self._clock() - started + interval > self.opts.timeout:
                self._cancel(submitted, base)
                raise HostedTimeoutError(
                    f"fal request {request_id} ({model}) did not finish within "
                    f"{self.opts.timeout:g} s (last status {state})",
                    f"raise --{self.kind}-opt timeout=SECONDS; fal may still finish and bill it",
                )
            self._sleep(interval)
            interval = min(interval * 1.5, 10.0)
        result = self._json(self.send("GET", response_url))
        self._raise_for_refusal(result, model, request_id)
        seconds = round(self._clock() - started, 3)
        self.last.update(job_seconds=seconds, polls=polls)
        return request_id, result, seconds

    def _cancel(self, submitted: dict, base: str) -> None:
        """Best effort: a job that timed out here should not keep running there."""
        url = submitted.get("cancel_url") or f"{base}/cancel"
        try:
            self.outbound.request("PUT", url, deadline=self.outbound.deadline_in(10.0))
        except Exception as exc:  # noqa: BLE001 - cancelling is a courtesy
            log.info("fal: cancel failed: %s", type(exc).__name__)

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        try:
            data = response.json()
        except (ValueError, json.JSONDecodeError):
            raise HostedError(
                f"fal answered with something that is not JSON: {response.url}"
            ) from None
        if not isinstance(data, dict):
            raise HostedError(f"fal answered with unexpected JSON: {str(data)[:200]}")
        return data

    def classify(self, status: int, body: str, url: str) -> Exception:
        refusal = _refusal(body)
        if refusal is not None:
            rid = self.last.get("request_id", "?")
            return self._refused(self.last.get("model", self.model_id()), rid, refusal)
        return super().classify(status, body, url)

    def _job_error(self, model: str, request_id: str, status: dict) -> Exception:
        text = json.dumps(status)
        refusal = _refusal(text)
        if refusal is not None:
            return self._refused(model, request_id, refusal)
        detail = self.scrub(str(status.get("error")))[:300]
        return HostedError(f"fal request {request_id} ({model}) failed: {detail}")

    def _raise_for_refusal(self, result: dict, model: str, request_id: str) -> None:
        refusal = _refusal(json.dumps(result)) if "detail" in result else None
        if refusal is not None:
            raise self._refused(model, request_id, refusal)
        flags = result.get("has_nsfw_concepts")
        if isinstance(flags, list) and any(flags):
            raise self._refused(
                model, request_id, "the provider's safety checker flagged the generated image"
            )

    def _refused(self, model: str, request_id: str, detail: str) -> ContentRefusedError:
        self.last.update(refused=True, refusal=detail)
        return ContentRefusedError(
            f"fal refused the request under its content policy ({model}, request "
            f"{request_id}): {detail}",
            "rephrase the prompt (the run record keeps it) or try another model",
            detail=detail,
        )


def _refusal(body: str) -> str | None:
    """The refusal text when ``body`` is fal's content-policy error, else None."""
    if "content_policy_violation" not in body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return "content_policy_violation"
    items = data.get("detail") if isinstance(data, dict) else data
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and item.get("type") == "content_policy_violation":
                msg = str(item.get("msg") or "flagged by a content checker")
                cats = item.get("categories") or []
                where = ".".join(str(x) for x in item.get("loc") or [])
                extra = f" [categories: {', '.join(map(str, cats))}]" if cats else ""
                return f"{msg}{extra}" + (f" (input: {where})" if where else "")
    return "content_policy_violation"


# -- images ---------------------------------------------------------------------------


class FalImage(FalBackend, ImageBackend):
    options_model = FalImageOptions
    opts: FalImageOptions

    def estimate(self) -> float | None:
        price = self.price_for(self.model_id())
        if price is None:
            return None
        return price.estimate(megapixels=self.opts.width * self.opts.height / 1e6)

    def payload(self, request: ImageRequest) -> dict[str, Any]:
        o = self.opts
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "image_size": {"width": o.width, "height": o.height},
            "num_images": 1,
            "seed": request.seed,
            "enable_safety_checker": o.safety_checker,
        }
        if o.steps is not None:
            body["num_inference_steps"] = o.steps
        if o.guidance is not None:
            body["guidance_scale"] = o.guidance
        negative = request.negative_prompt or o.negative_prompt
        if negative:
            body["negative_prompt"] = negative
        return body

    def generate(self, request: ImageRequest) -> Any:
        model = self.model_id()
        estimate = self.estimate()
        self.check_budget(estimate, f"the cover from {model}")
        request_id, result, _ = self.run(model, self.payload(request))
        images = result.get("images") or []
        url = images[0].get("url") if images and isinstance(images[0], dict) else None
        if not url:
            raise HostedError(f"fal request {request_id} ({model}) returned no image")
        picture = open_image(self.download(url), f"the image of fal request {request_id}")
        self.charge(estimate)
        self.last.update(
            cost_estimate_usd=estimate,
            width=picture.width,
            height=picture.height,
            seed=request.seed,
        )
        return to_cover(picture)


class FalFlux(FalImage):
    name = "fal-flux"
    description = "FLUX.1 [schnell] on fal (hosted, paid; model=fal-ai/flux/dev for [dev])"
    default_model = "fal-ai/flux/schnell"


class FalSD(FalImage):
    name = "fal-sd"
    description = "Stable Diffusion 3.5 Medium on fal (hosted, paid)"
    default_model = "fal-ai/stable-diffusion-v35-medium"


# -- videos ---------------------------------------------------------------------------


class FalVideo(FalBackend, VideoBackend):
    """A text-to-video / image-to-video family on fal; subclasses set models and fields."""

    options_model = FalVideoOptions
    opts: FalVideoOptions
    default_i2v_model: ClassVar[str]
    default_frames: ClassVar[int | None] = None
    default_fps: ClassVar[float] = 24.0
    default_resolution: ClassVar[str | None] = None
    from_cover: bool = False

    def configure(self, settings: Any) -> None:
        self.from_cover = bool(getattr(settings, "video_from_cover", False))

    def model_id(self) -> str:
        if self.from_cover:
            return self.opts.i2v_model or self.default_i2v_model
        return self.opts.model or self.default_model

    def frames(self) -> int | None:
        return self.opts.frames or self.default_frames

    def fps(self) -> float:
        return float(self.opts.fps or self.default_fps)

    def resolution(self) -> str | None:
        return self.opts.resolution or self.default_resolution

    def billed_seconds(self, price: Price) -> float:
        frames = self.frames()
        if frames is None:
            return float(self.opts.duration or 5)
        return frames / float(price.billing_fps or self.fps())

    def estimate(self) -> float | None:
        price = self.price_for(self.model_id())
        if price is None:
            return None
        return price.estimate(seconds=self.billed_seconds(price))

    def options(self) -> dict[str, Any]:
        data = super().options()
        data["from_cover"] = self.from_cover
        data["endpoint"] = self.model_id()
        return data

    def payload(self, request: VideoRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": request.prompt, "seed": request.seed}
        if self.opts.aspect_ratio:
            body["aspect_ratio"] = self.opts.aspect_ratio
        negative = request.negative_prompt or self.opts.negative_prompt
        if negative:
            body["negative_prompt"] = negative
        if self.from_cover:
            body["image_url"] = png_data_uri(request.cover)
        return body

    def generate(self, request: VideoRequest) -> Clip:
        if self.from_cover and request.cover is None:
            raise RenderError(
                f"--video-from-cover is on but no cover was given to '{self.name}'",
                "render the cover first (the pipeline does) or drop --video-from-cover",
            )
        model = self.model_id()
        estimate = self.estimate()
        self.check_budget(estimate, f"the clip from {model}")
        request_id, result, seconds = self.run(model, self.payload(request))
        video = result.get("video")
        url = video.get("url") if isinstance(video, dict) else None
        if not url:
            raise HostedError(f"fal request {request_id} ({model}) returned no video")
        data = self.download(url)
        frames, fps, info = decode_mp4(
            data, seconds=request.seconds, what=f"the video of fal request {request_id}"
        )
        self.charge(estimate)
        self.last.update(cost_estimate_usd=estimate, bytes=len(data))
        meta = {
            "provider": self.provider,
            "model": model,
            "request_id": request_id,
            "job_seconds": seconds,  # submit to result (the clip's length is "seconds")
            "cost_estimate_usd": estimate,
            "from_cover": self.from_cover,
            **info,
        }
        return Clip(frames=frames, fps=fps, meta=meta)


class FalLTX(FalVideo):
    name = "fal-ltx"
    description = "LTX-Video 0.9.8 13B distilled on fal (hosted, paid; text or cover to video)"
    default_model = "fal-ai/ltxv-13b-098-distilled"
    default_i2v_model = "fal-ai/ltxv-13b-098-distilled/image-to-video"
    default_frames = 73  # 8k+1 frames, just over 3 s at 24 fps
    default_resolution = "720p"

    def payload(self, request: VideoRequest) -> dict[str, Any]:
        body = super().payload(request)
        body["num_frames"] = self.frames()
        body["resolution"] = "480p" if self.resolution() == "480p" else "720p"
        return body


class FalWan(FalVideo):
    name = "fal-wan"
    description = "Wan 2.2 A14B on fal (hosted, paid; text or cover to video)"
    default_model = "fal-ai/wan/v2.2-a14b/text-to-video"
    default_i2v_model = "fal-ai/wan/v2.2-a14b/image-to-video"
    default_frames = 49  # 4k+1 frames, just over 3 s at 16 fps
    default_fps = 16.0
    default_resolution = "720p"

    def price_for(self, model: str) -> Price | None:
        price = super().price_for(model)
        if price is None or self.opts.price is not None or price.unit != "second":
            return price
        usd = WAN_RESOLUTION_PRICE.get(self.resolution() or "720p", price.usd)
        return Price(usd, "second", price.source, billing_fps=price.billing_fps)

    def payload(self, request: VideoRequest) -> dict[str, Any]:
        body = super().payload(request)
        body.update(
            num_frames=self.frames(),
            frames_per_second=int(self.fps()),
            resolution=self.resolution(),
            enable_safety_checker=self.opts.safety_checker,
        )
        if self.opts.steps:
            body["num_inference_steps"] = self.opts.steps
        return body


class FalHunyuan(FalVideo):
    name = "fal-hunyuan"
    description = "HunyuanVideo on fal (hosted, paid; text or cover to video)"
    default_model = "fal-ai/hunyuan-video"
    default_i2v_model = "fal-ai/hunyuan-video-image-to-video"
    default_frames = 85  # the smaller of its two frame counts (85, 129)
    default_resolution = "720p"

    def payload(self, request: VideoRequest) -> dict[str, Any]:
        body = super().payload(request)
        body.update(num_frames=str(self.frames()), resolution=self.resolution())
        if not self.from_cover:
            body["enable_safety_checker"] = self.opts.safety_checker
            if self.opts.steps:
                body["num_inference_steps"] = self.opts.steps
        return body


class FalKling(FalVideo):
    name = "fal-kling"
    description = "Kling 2.5 turbo on fal (hosted, paid; 5 s clips trimmed to 3 s)"
    default_model = "fal-ai/kling-video/v2.5-turbo/pro/text-to-video"
    default_i2v_model = "fal-ai/kling-video/v2.5-turbo/standard/image-to-video"
    default_frames = None  # Kling takes a duration: 5 or 10 s

    def payload(self, request: VideoRequest) -> dict[str, Any]:
        body = super().payload(request)
        body.pop("seed", None)  # not an input of Kling
        if self.from_cover:
            body.pop("aspect_ratio", None)  # follows the cover
        body["duration"] = str(self.opts.duration or 5)
        return body
