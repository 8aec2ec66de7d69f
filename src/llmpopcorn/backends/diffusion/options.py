"""Validated options for the diffusers backends.

Users pass options as ``--image-opt KEY=VALUE`` / ``--video-opt KEY=VALUE`` (or the
``image_options`` / ``video_options`` settings); they are checked here against a
pydantic model with ``extra="forbid"`` and against the model's own rules (size
multiples, frame-count rule, what the device supports), then resolved to concrete
values with the model's defaults (:class:`Resolved`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from llmpopcorn.backends.diffusion import policy
from llmpopcorn.backends.diffusion.specs import ModelSpec
from llmpopcorn.backends.options import RendererOptions, validate_options
from llmpopcorn.core.errors import ConfigError

Dtype = Literal["auto", "float32", "float16", "bfloat16"]
Offload = Literal["none", "model", "sequential"]
Quantization = Literal["auto", "none", "bnb-4bit", "bnb-8bit", "torchao-int8"]

#: the package each quantization backend needs
QUANT_PACKAGES = {"bnb-4bit": "bitsandbytes", "bnb-8bit": "bitsandbytes", "torchao-int8": "torchao"}


class ImageOptions(RendererOptions):
    """Options of an image backend (``--image-opt KEY=VALUE``)."""

    request_safe: ClassVar[frozenset[str]] = frozenset(
        {"steps", "guidance", "width", "height", "preset", "negative_prompt", "fit"}
    )

    model: str | None = Field(None, description="Hugging Face repo id or local folder")
    dtype: Dtype = Field(
        "auto", description="auto: the model's half precision on CUDA, float32 on CPU"
    )
    device: str | None = Field(
        None, description="auto, cpu, cuda, cuda:N (default: the device setting)"
    )
    steps: int | None = Field(None, ge=1, le=1000)
    guidance: float | None = Field(None, ge=0.0, le=50.0)
    width: int | None = Field(None, ge=8, le=4096)
    height: int | None = Field(None, ge=8, le=4096)
    preset: Literal["9:16", "paper"] = Field(
        "9:16", description="default size when width/height are not given"
    )
    negative_prompt: str | None = None
    offload: Offload = "none"
    vae_tiling: bool = False
    vae_slicing: bool = False
    quantization: Quantization = Field(
        "auto", description="of the transformer/UNet; auto: the paper's choice on CUDA, none on CPU"
    )
    max_sequence_length: int | None = Field(None, ge=1, le=4096)
    memory_check: bool = Field(
        True, description="refuse to load when the plan says it will not fit"
    )
    fit: Literal["crop", "letterbox"] | None = Field(
        None, description="how the generated picture reaches 9:16 (default: the model's)"
    )


class VideoOptions(ImageOptions):
    """Options of a video backend (``--video-opt KEY=VALUE``)."""

    request_safe: ClassVar[frozenset[str]] = ImageOptions.request_safe | {
        "frames",
        "fps",
        "duration",
    }

    frames: int | None = Field(
        None, ge=1, le=1024, description="generated frames (must follow the model's rule)"
    )
    fps: float | None = Field(None, gt=0, le=120)
    i2v_model: str | None = Field(None, description="image-to-video weights for --video-from-cover")
    adapter: str | None = Field(
        None, description="AnimateDiff motion adapter: repo/file, folder or file"
    )
    duration: Literal["trim", "resample", "retime"] | None = Field(
        None, description="how the generated frames reach exactly 3.0 s (default: the model's)"
    )


@dataclass(frozen=True)
class Resolved:
    """Concrete options for one backend, after defaults and checks."""

    model: str
    dtype: str
    device: str
    steps: int
    guidance: float
    width: int
    height: int
    negative_prompt: str | None
    offload: str
    vae_tiling: bool
    vae_slicing: bool
    quantization: str
    max_sequence_length: int | None
    memory_check: bool
    frames: int | None = None
    fps: float | None = None
    from_cover: bool = False
    i2v_model: str | None = None
    adapter: str | None = None
    fit: str = "crop"
    out_width: int | None = None  # after `fit`
    out_height: int | None = None
    duration: str | None = None
    out_frames: int | None = None  # after `duration`: exactly 3.0 s
    out_fps: float | None = None
    #: per-component dtypes ("default": the rest); empty: every component in `dtype`
    component_dtypes: dict[str, str] | None = None

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}

    def replace(self, **changes: Any) -> Resolved:
        data = asdict(self)
        data.update(changes)
        return Resolved(**data)


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str, cuda_available: Callable[[], bool] = _cuda_available) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is present, else ``cpu``; others checked."""
    device = device.strip().lower()
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not cuda_available():
            raise ConfigError(
                f"device '{device}' was asked for but no CUDA device is available",
                "use --device cpu (slow, for tiny models) or run on a machine with a GPU",
            )
        return device
    raise ConfigError(f"unknown device '{device}'", "use auto, cpu, cuda or cuda:N")


def resolve_options(
    spec: ModelSpec,
    raw: Mapping[str, Any] | None,
    *,
    device: str = "auto",
    from_cover: bool = False,
    cuda_available: Callable[[], bool] = _cuda_available,
) -> Resolved:
    """Validate user options for ``spec`` and fill in the model's defaults."""
    model_cls = VideoOptions if spec.kind == "video" else ImageOptions
    flag = f"--{spec.kind}-opt"
    opts = validate_options(model_cls, raw, kind=spec.kind, name=spec.name)
    dev = resolve_device(opts.device or device, cuda_available)
    on_cuda = dev.startswith("cuda")

    if opts.preset == "paper" and spec.size_paper:
        width, height = spec.size_paper
    else:
        width, height = spec.size_9x16
    width, height = opts.width or width, opts.height or height
    if spec.fixed_size and spec.native_size and (width, height) != spec.native_size:
        nw, nh = spec.native_size
        raise ConfigError(
            f"{spec.name}: {width}x{height} is not a size this model accepts; accepted: "
            f"width={nw} height={nh} only ({spec.why_native})",
            f"leave width/height unset (or use {flag} width={nw} {flag} height={nh}); the "
            f"9:16 output comes from {flag} fit=crop (centre) or fit=letterbox (bars)",
        )
    for axis, value in (("width", width), ("height", height)):
        if value % spec.multiple:
            near = max(spec.multiple, round(value / spec.multiple) * spec.multiple)
            raise ConfigError(
                f"{spec.name}: {axis} {value} is not a multiple of {spec.multiple}",
                f"use {flag} {axis}={near}",
            )

    dtype = opts.dtype
    if dtype == "auto":
        dtype = spec.cuda_dtype if on_cuda else "float32"
    quant = opts.quantization
    if quant == "auto":
        quant = spec.quantization if on_cuda else "none"
    if quant != "none":
        if not on_cuda:
            raise ConfigError(
                f"{spec.name}: quantization '{quant}' needs a CUDA device (the device is {dev})",
                f"use {flag} quantization=none on the CPU",
            )
        package = QUANT_PACKAGES[quant]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"{spec.name}: quantization '{quant}' needs the package '{package}'",
                f"pip install {package}, or use {flag} quantization=none",
            )
    if opts.offload != "none" and not on_cuda:
        raise ConfigError(
            f"{spec.name}: offload '{opts.offload}' moves weights between the CPU and a GPU, "
            f"but the device is {dev}",
            f"use {flag} offload=none on the CPU",
        )
    problem = combination_problem(quant, opts.offload)
    if problem:
        raise ConfigError(f"{spec.name}: {problem}", _combination_hint(flag, quant))
    fit = opts.fit or spec.fit
    out_width, out_height = policy.fit_size(width, height, fit)
    component_dtypes = None
    if opts.dtype == "auto" and on_cuda and spec.component_dtypes:
        component_dtypes = {"default": dtype, **spec.component_dtypes}

    frames = fps = duration = out_frames = out_fps = None
    if spec.kind == "video":
        assert isinstance(opts, VideoOptions)
        fps = float(opts.fps or spec.fps or 8)
        frames = opts.frames or spec.default_frames(fps)
        if spec.fixed_frames and spec.native_frames and frames != spec.native_frames:
            raise ConfigError(
                f"{spec.name}: {frames} frames is not a count this model accepts; accepted: "
                f"frames={spec.native_frames} only ({spec.why_native})",
                f"leave frames unset; the clip reaches 3.0 s by {flag} duration=trim "
                "(first 3 s) or duration=resample/retime (the whole clip, faster)",
            )
        if not spec.valid_frames(frames):
            raise ConfigError(
                f"{spec.name}: {frames} frames does not follow the model's rule "
                f"({spec.frame_rule()})",
                f"use {flag} frames={spec.frames_for(frames / fps, fps)} or leave frames unset",
            )
        if spec.max_frames and frames > spec.max_frames:
            raise ConfigError(
                f"{spec.name}: {frames} frames is more than the model handles ({spec.max_frames})",
                f"lower {flag} fps=... (3 s at a lower frame rate) or set frames",
            )
        if from_cover and not spec.i2v_pipeline:
            raise ConfigError(
                f"video backend '{spec.name}' cannot start from the cover (no image-to-video "
                "pipeline)",
                "drop --video-from-cover or use one of: ltx, cogvideox, wan",
            )
        if opts.i2v_model and not spec.i2v_pipeline:
            raise ConfigError(f"{spec.name}: option i2v_model is not supported", "remove it")
        if opts.adapter and not spec.adapter_id:
            raise ConfigError(f"{spec.name}: option adapter is not supported", "remove it")
        duration = opts.duration or spec.duration
        if duration == "trim" and frames < fps * policy.SECONDS - 1e-6:
            raise ConfigError(
                f"{spec.name}: duration=trim needs at least 3.0 s, but {frames} frames at "
                f"{fps:g} fps last {frames / fps:.2f} s",
                f"use {flag} duration=retime or duration=resample (accepted: "
                f"{', '.join(policy.DURATIONS)}), or more frames / a lower fps",
            )
        out_frames, out_fps = policy.output_timing(frames, fps, duration)
    return Resolved(
        model=opts.model or spec.model_id,
        dtype=dtype,
        device=dev,
        steps=opts.steps or spec.steps,
        guidance=spec.guidance if opts.guidance is None else opts.guidance,
        width=width,
        height=height,
        negative_prompt=opts.negative_prompt
        if opts.negative_prompt is not None
        else spec.negative_prompt,
        offload=opts.offload,
        vae_tiling=opts.vae_tiling,
        vae_slicing=opts.vae_slicing,
        quantization=quant,
        max_sequence_length=opts.max_sequence_length or spec.max_sequence_length,
        memory_check=opts.memory_check,
        frames=frames,
        fps=fps,
        from_cover=from_cover,
        i2v_model=(getattr(opts, "i2v_model", None) or spec.i2v_model_id) if from_cover else None,
        adapter=getattr(opts, "adapter", None) or spec.adapter_id,
        fit=fit,
        out_width=out_width,
        out_height=out_height,
        duration=duration,
        out_frames=out_frames,
        out_fps=out_fps,
        component_dtypes=component_dtypes,
    )


def combination_problem(quantization: str, offload: str) -> str | None:
    """Why a quantization + offload combination does not work, or None when it does.

    bitsandbytes weights cannot be moved layer by layer: sequential CPU offload of a
    bitsandbytes-quantized model fails (diffusers #10800, bitsandbytes #1525, both
    closed as won't fix). Model offload moves whole components and works.
    """
    if quantization.startswith("bnb") and offload == "sequential":
        return (
            f"quantization={quantization} with offload=sequential does not work "
            "(bitsandbytes weights cannot be offloaded layer by layer: diffusers #10800, "
            "bitsandbytes #1525)"
        )
    return None


def _combination_hint(flag: str, quant: str) -> str:
    return (
        f"use {flag} quantization={quant} {flag} offload=model (whole components move), "
        f"or {flag} quantization=none {flag} offload=sequential"
    )
