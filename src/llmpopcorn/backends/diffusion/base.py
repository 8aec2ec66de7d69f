"""One shared implementation for every diffusers backend: plan, load, seed, call, convert.

A backend is a :class:`~.specs.ModelSpec` plus this code. ``from_settings`` does
everything that can fail cheaply, before any weight is read: it validates the
options, finds the weights (local folder or local Hugging Face cache) and checks the
memory plan. The pipeline is loaded on the first ``generate`` call, with
``local_files_only=True``, and kept for later calls.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import logging
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from llmpopcorn.backends.base import (
    Availability,
    Clip,
    ImageBackend,
    ImageRequest,
    VideoBackend,
    VideoRequest,
)
from llmpopcorn.backends.diffusion import memory as mem
from llmpopcorn.backends.diffusion import policy
from llmpopcorn.backends.diffusion.cancel import current_stop_check
from llmpopcorn.backends.diffusion.options import (
    ImageOptions,
    Resolved,
    VideoOptions,
    resolve_options,
)
from llmpopcorn.backends.diffusion.specs import ModelSpec
from llmpopcorn.backends.diffusion.weights import (
    fetch_command,
    find,
    locate,
    measured_sizes,
    model_index,
)
from llmpopcorn.backends.options import selected_options
from llmpopcorn.core.errors import MissingExtraError, PopcornError, RenderError, require

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from llmpopcorn.core.settings import Settings

log = logging.getLogger(__name__)

GPU_MODULES = ("torch", "diffusers", "transformers", "huggingface_hub")
DENOISERS = ("transformer", "unet")


def quant_settings(quantization: str, dtype: str) -> dict[str, Any]:
    """Keyword arguments of diffusers' own quantization config for ``quantization``.

    bnb-4bit computes in the run's dtype (``bnb_4bit_compute_dtype``): without it,
    diffusers gives ``Linear4bit`` float32 and every 4-bit matmul runs in fp32.
    torchao takes an ``AOBaseConfig`` instance (int8 weight-only), made in
    :func:`quantization_config`.
    """
    if quantization == "bnb-4bit":
        return {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_compute_dtype": dtype,
        }
    if quantization == "bnb-8bit":
        return {"load_in_8bit": True}
    if quantization == "torchao-int8":
        return {"quant_type": "Int8WeightOnlyConfig"}
    raise ValueError(f"unknown quantization {quantization!r}")


def quantization_config(quantization: str, dtype: str, components: Any) -> Any:
    """A ``PipelineQuantizationConfig`` that quantizes the denoiser only.

    Built as a ``quant_mapping`` of diffusers' own config classes: the
    ``quant_backend``/``quant_kwargs`` form fails for torchao in diffusers 0.42 (its
    TorchAoConfig and transformers' take different arguments).
    """
    import diffusers
    import torch

    settings = quant_settings(quantization, dtype)
    if quantization.startswith("bnb"):
        if "bnb_4bit_compute_dtype" in settings:
            settings["bnb_4bit_compute_dtype"] = getattr(torch, dtype)
        config = diffusers.BitsAndBytesConfig(**settings)
    else:
        from torchao import quantization as ao

        config = diffusers.TorchAoConfig(quant_type=getattr(ao, settings["quant_type"])())
    targets = [c for c in DENOISERS if c in components]
    return diffusers.PipelineQuantizationConfig(quant_mapping={c: config for c in targets})


def torch_dtypes(opts: Resolved, torch: Any) -> Any:
    """``torch_dtype`` for ``from_pretrained``: one dtype, or a per-component mapping."""
    if not opts.component_dtypes:
        return getattr(torch, opts.dtype)
    mapping = {name: getattr(torch, value) for name, value in opts.component_dtypes.items()}
    for name in DENOISERS:
        mapping.setdefault(name, getattr(torch, opts.dtype))
    return mapping


def device_scope(device: str, torch: Any) -> Any:
    """Make ``cuda:N`` the current CUDA device while loading and calling: bitsandbytes
    puts quantized weights on the current device, whatever ``device`` says."""
    if device.startswith("cuda:"):
        return torch.cuda.device(torch.device(device))
    return contextlib.nullcontext()


def placement_problem(pipe: Any, device: str, torch: Any) -> str | None:
    """Components whose weights are not all on ``device`` (None when all are)."""
    want = torch.device(device)
    wrong = []
    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        devices = {p.device for p in component.parameters()}
        if any(
            d.type != want.type or (want.index is not None and d.index != want.index)
            for d in devices
        ):
            wrong.append(f"{name} on {', '.join(sorted(str(d) for d in devices))}")
    return "; ".join(wrong) or None


class DiffusionBackend:
    """Mixin with the shared behaviour; subclasses set ``spec`` (and a registry name)."""

    spec: ClassVar[ModelSpec]
    kind: ClassVar[str]
    name: ClassVar[str]

    def __init__(
        self,
        options: Resolved,
        *,
        weights: Path | None = None,
        plan: mem.MemoryPlan | None = None,
        pipeline: Any = None,
    ):
        self.opts = options
        self.weights = weights
        self.plan = plan
        self._pipe = pipeline  # may be given directly (tests, benchmarks)
        self.last_run: dict[str, Any] = {}

    # -- construction: every cheap check, before loading ---------------------------

    @classmethod
    def from_settings(cls, settings: Settings) -> DiffusionBackend:
        for module in GPU_MODULES:  # present, not imported: loading imports them
            if not _installed(module):
                raise MissingExtraError(module, "gpu", f"the '{cls.name}' {cls.kind} backend")
        raw = selected_options(settings, cls.kind, cls.name)
        from_cover = bool(getattr(settings, "video_from_cover", False)) and cls.kind == "video"
        opts = resolve_options(cls.spec, raw, device=settings.device, from_cover=from_cover)
        return cls.prepare(opts)

    @classmethod
    def prepare(cls, opts: Resolved, *, memory: mem.DeviceMemory | None = None) -> DiffusionBackend:
        """Find the weights and check the memory plan for resolved options."""
        spec = cls.spec
        separate_i2v = bool(opts.from_cover and opts.i2v_model)
        ref = opts.i2v_model if separate_i2v else opts.model
        weights = locate(ref, spec, from_cover=separate_i2v)
        if opts.adapter and spec.adapter_id and "motion_adapter" not in model_index(weights):
            locate(opts.adapter, spec, what="motion adapter", size_gb=spec.adapter_gb)
        elif opts.adapter and "motion_adapter" in model_index(weights):
            opts = opts.replace(adapter=None)  # the folder already holds one
        memory = memory or mem.device_memory(opts.device)
        sizes = measured_sizes(weights, spec, opts.from_cover)
        if opts.memory_check:
            plan = mem.check(spec, opts, memory, sizes)
        else:
            plan = mem.plan(spec, opts, memory, sizes)
        log.info(
            "%s: weights %s, estimated peak %.2f GB on %s",
            spec.name,
            weights,
            plan.estimate.peak_gb,
            memory.device,
        )
        return cls(opts, weights=weights, plan=plan)

    @classmethod
    def availability(cls, settings: Settings | None = None) -> Availability:
        deps = Availability.needs_modules("gpu", *GPU_MODULES)
        if not deps.ok:
            return deps
        raw = selected_options(settings, cls.kind, cls.name)
        ref = raw.get("model") or cls.spec.model_id
        found = find(str(ref))
        if found is None:
            return Availability(
                False,
                f"weights not found locally: {fetch_command(str(ref), cls.spec)} "
                f"(~{cls.spec.download_gb:.0f} GB)",
            )
        adapter = raw.get("adapter") or cls.spec.adapter_id
        if adapter and found.is_dir() and "motion_adapter" not in model_index(found):
            if find(str(adapter)) is None:
                return Availability(
                    False,
                    f"motion adapter not found locally: {fetch_command(str(adapter))} "
                    f"(~{cls.spec.adapter_gb:.1f} GB)",
                )
        return Availability(True, f"weights: {found}")

    # -- recorded options ------------------------------------------------------------

    def model_id(self) -> str:
        return (
            self.opts.i2v_model if self.opts.from_cover and self.opts.i2v_model else self.opts.model
        )

    def options(self) -> dict[str, Any]:
        out = self.opts.record()
        if self.plan is not None:
            out.update(self.plan.record())
        if self.last_run:
            out["measured"] = dict(self.last_run)
        return out

    # -- loading ---------------------------------------------------------------------

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            self._pipe = self._load()
        return self._pipe

    def _pipeline_class(self) -> str:
        spec = self.spec
        return spec.i2v_pipeline if self.opts.from_cover and spec.i2v_pipeline else spec.pipeline

    def _load(self) -> Any:
        torch = require("torch", "gpu", f"the '{self.name}' backend")
        diffusers = require("diffusers", "gpu", f"the '{self.name}' backend")
        opts, spec = self.opts, self.spec
        path = self.weights or locate(self.model_id(), spec)
        flag = f"--{self.kind}-opt"
        started = time.perf_counter()
        cls = getattr(diffusers, self._pipeline_class())
        try:
            with device_scope(opts.device, torch):
                kwargs: dict[str, Any] = {
                    "torch_dtype": torch_dtypes(opts, torch),
                    "local_files_only": True,
                }
                if opts.quantization != "none":
                    kwargs["quantization_config"] = quantization_config(
                        opts.quantization, opts.dtype, model_index(path)
                    )
                if opts.adapter:
                    kwargs["motion_adapter"] = self._load_adapter(diffusers, torch)
                pipe = cls.from_pretrained(str(path), **kwargs)
                if spec.scheduler:
                    config = dict(spec.scheduler)
                    sched_cls = getattr(diffusers, config.pop("class"))
                    pipe.scheduler = sched_cls.from_config(pipe.scheduler.config, **config)
                self._place(pipe, torch)
        except PopcornError:
            raise
        except torch.cuda.OutOfMemoryError as exc:
            raise mem.MemoryPlanError(
                f"{spec.title} ({self.name}) ran out of GPU memory while loading",
                f"try {flag} offload=model, a quantization, or a device with more memory",
            ) from exc
        except OSError as exc:
            raise RenderError(
                f"could not load {spec.title} ({self.name}) from {path}: {exc}",
                "check that the folder is a complete diffusers pipeline; re-fetch it with "
                f"`{fetch_command(self.model_id(), spec, bool(opts.i2v_model))}` "
                "on a connected machine",
            ) from exc
        except Exception as exc:  # noqa: BLE001 - every loading failure gets a hint
            raise RenderError(
                f"could not load {spec.title} ({self.name}) with {_option_summary(opts)}: "
                f"{type(exc).__name__}: {_first_line(exc)}",
                f"the likely options at fault: quantization={opts.quantization}, "
                f"dtype={opts.dtype}, offload={opts.offload}; try {flag} quantization=none "
                f"or {flag} offload=none, or re-fetch the weights",
            ) from exc
        pipe.set_progress_bar_config(disable=True)
        self.last_run["load_seconds"] = round(time.perf_counter() - started, 3)
        return pipe

    def _load_adapter(self, diffusers: Any, torch: Any) -> Any:
        path = locate(str(self.opts.adapter), self.spec, what="motion adapter", size_gb=0.9)
        dtype = getattr(torch, self.opts.dtype)
        if path.is_dir():
            return diffusers.MotionAdapter.from_pretrained(
                str(path), torch_dtype=dtype, local_files_only=True
            )
        from safetensors.torch import load_file

        adapter = diffusers.MotionAdapter()
        adapter.load_state_dict(load_file(str(path)))
        return adapter.to(dtype)

    def _place(self, pipe: Any, torch: Any) -> None:
        opts = self.opts
        if opts.offload == "model":
            pipe.enable_model_cpu_offload(device=opts.device)
        elif opts.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=opts.device)
        elif not opts.quantization.startswith("bnb"):
            pipe.to(opts.device)
        else:  # bitsandbytes placed its weights on the current (scoped) device; move the rest
            for name, component in pipe.components.items():
                if isinstance(component, torch.nn.Module) and name not in DENOISERS:
                    component.to(opts.device)
        if opts.offload == "none":
            problem = placement_problem(pipe, opts.device, torch)
            if problem:
                raise RenderError(
                    f"{self.spec.title} ({self.name}): components are not all on "
                    f"{opts.device} after loading: {problem}",
                    f"use --{self.kind}-opt device=cuda (the first GPU) or "
                    f"--{self.kind}-opt quantization=none",
                )
        vae = getattr(pipe, "vae", None)
        if opts.vae_tiling and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
        if opts.vae_slicing and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()

    # -- calling ---------------------------------------------------------------------

    def call_kwargs(self, prompt: str, negative: str | None) -> dict[str, Any]:
        """Arguments shared by every pipeline call (the subclass adds frames/images)."""
        opts = self.opts
        kwargs: dict[str, Any] = {
            "prompt": prompt,
            "num_inference_steps": opts.steps,
            "guidance_scale": opts.guidance,
            "width": opts.width,
            "height": opts.height,
            "output_type": "np",
        }
        negative = negative if negative is not None else opts.negative_prompt
        if negative and self._accepts("negative_prompt"):
            kwargs["negative_prompt"] = negative
        if opts.max_sequence_length and self._accepts("max_sequence_length"):
            kwargs["max_sequence_length"] = opts.max_sequence_length
        kwargs.update(self.spec.extra_call)
        return kwargs

    def _accepts(self, arg: str) -> bool:
        return arg in _call_parameters(type(self.pipe))

    def run(self, kwargs: dict[str, Any], seed: int) -> Any:
        """Call the pipeline with a seeded generator; record time per step and peak memory."""
        torch = require("torch", "gpu")
        pipe = self.pipe
        stamps: list[float] = []
        check = current_stop_check()  # a cancellable caller's stop (see .cancel)
        stopped: list[BaseException] = []

        def on_step(step_pipe: Any, _step: int, _t: Any, callback_kwargs: dict) -> dict:
            stamps.append(time.perf_counter())
            if check is not None:
                if stopped:  # asked to stop at the last step and still going: end it now
                    raise stopped[0]
                try:
                    check()
                except BaseException as exc:  # noqa: BLE001 - re-raised once the call returns
                    stopped.append(exc)
                    step_pipe._interrupt = True  # diffusers skips the remaining steps
            return callback_kwargs

        cuda = self.opts.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.opts.device)
        # a CPU generator gives the same noise whatever the device or offload mode
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        started = time.perf_counter()
        try:
            with device_scope(self.opts.device, torch), torch.inference_mode():
                out = pipe(**kwargs, generator=generator, callback_on_step_end=on_step)
        except torch.cuda.OutOfMemoryError as exc:  # the plan was wrong: say what to change
            raise mem.MemoryPlanError(
                f"{self.spec.title} ran out of GPU memory: {exc}".splitlines()[0],
                f"try --{self.kind}-opt offload=model, vae_tiling=true or a lower resolution",
            ) from exc
        except PopcornError:
            raise
        except Exception as exc:  # noqa: BLE001 - a raw library error becomes ours, with a fix
            if stopped and exc is stopped[0]:
                raise
            raise self.call_error(exc) from exc
        if stopped:  # the caller's own stop (a cancelled job), after `len(stamps)` steps
            raise stopped[0]
        total = time.perf_counter() - started
        steps = len(stamps)
        per_step = (stamps[-1] - stamps[0]) / (steps - 1) if steps > 1 else total
        if cuda:
            peak, source = torch.cuda.max_memory_allocated(self.opts.device) / 1e9, "cuda"
        else:
            peak, source = _max_rss_gb(), "process max RSS"
        self.last_run.update(
            render_seconds=round(total, 4),
            steps=steps,
            seconds_per_step=round(per_step, 4),
            peak_memory_gb=round(peak, 3),
            peak_memory_source=source,
            seed=int(seed),
        )
        return out

    def call_error(self, exc: BaseException) -> RenderError:
        """A failure inside the pipeline call as our error: backend, option, fix."""
        opts, spec, flag = self.opts, self.spec, f"--{self.kind}-opt"
        text = f"{type(exc).__name__}: {_first_line(exc)}"
        low = text.lower()
        message = f"the '{self.name}' {self.kind} backend ({spec.title}) failed while rendering"
        message += f" with {_option_summary(opts)}: {text}"
        if "resolution" in low or "positional" in low or "divisible" in low:
            if spec.native_size:
                w, h = spec.native_size
                fix = f"{flag} width={w} {flag} height={h} (the size it was trained for)"
            else:
                fix = f"{flag} width/height that are multiples of {spec.multiple}"
            hint = f"the option at fault is width/height ({opts.width}x{opts.height}): use {fix}"
            if spec.native_frames:
                hint += f" and frames={spec.native_frames}"
        elif "frame" in low:
            hint = (
                f"the option at fault is frames={opts.frames}: leave it unset (the model's "
                f"default) or follow its rule ({spec.frame_rule()})"
            )
        elif "dtype" in low or "half" in low or "bfloat16" in low or "scalar type" in low:
            other = "float32" if opts.dtype != "float32" else "bfloat16"
            hint = f"the option at fault is dtype={opts.dtype}: try {flag} dtype={other}"
        else:
            hint = (
                f"the options in use were {_option_summary(opts)}: go back to the model's "
                f"defaults (drop width/height/frames/dtype/quantization from {flag}); if it "
                "still fails, run with --debug and report the traceback"
            )
        return RenderError(message, hint)

    def check_finite(self, array: Any) -> None:
        """NaN or infinite output fails loudly: clipped to uint8 it would pass as black."""
        values = array.detach().float().cpu().numpy() if hasattr(array, "detach") else array
        values = np.asarray(values)
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            other = "float32" if self.opts.dtype != "float32" else "bfloat16"
            raise RenderError(
                f"the '{self.name}' {self.kind} backend ({self.spec.title}) produced "
                f"{bad} NaN/infinite values of {values.size} (dtype={self.opts.dtype}, "
                f"component dtypes {self.opts.component_dtypes or 'all ' + self.opts.dtype})",
                f"the option at fault is most likely dtype: try --{self.kind}-opt "
                f"dtype={other}; a half-precision VAE overflows on some models",
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [""])[0][:300]


def _option_summary(opts: Resolved) -> str:
    parts = [f"{opts.width}x{opts.height}", f"dtype={opts.dtype}"]
    if opts.frames:
        parts.append(f"frames={opts.frames}")
    if opts.quantization != "none":
        parts.append(f"quantization={opts.quantization}")
    if opts.offload != "none":
        parts.append(f"offload={opts.offload}")
    parts.append(f"device={opts.device}")
    return ", ".join(parts)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@functools.cache
def _call_parameters(pipeline_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(pipeline_class.__call__).parameters)


def _max_rss_gb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e9 if sys.platform == "darwin" else rss * 1024 / 1e9


def to_uint8(array: Any) -> np.ndarray:
    """Float images in [0, 1] (numpy or torch) -> uint8."""
    if hasattr(array, "detach"):
        array = array.detach().float().cpu().numpy()
    array = np.asarray(array, dtype=np.float32)
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class DiffusionImage(DiffusionBackend, ImageBackend):
    """A diffusers text-to-image backend; the cover reaches 9:16 by the ``fit`` policy."""

    options_model = ImageOptions

    def request_kwargs(self, request: ImageRequest) -> dict[str, Any]:
        """The exact pipeline arguments for ``request`` (less the generator)."""
        kwargs = self.call_kwargs(request.prompt, request.negative_prompt)
        if request.width and request.height and not self.spec.fixed_size:
            kwargs.update(width=request.width, height=request.height)
        return kwargs

    def generate(self, request: ImageRequest) -> Image.Image:
        from PIL import Image as PILImage

        out = self.run(self.request_kwargs(request), request.seed)
        self.check_finite(out.images[0])
        picture = PILImage.fromarray(to_uint8(out.images[0]))
        self.last_run["generated_size"] = f"{picture.width}x{picture.height}"
        self.last_run["fit"] = self.opts.fit
        return to_cover(picture, self.opts.fit)


def to_cover(picture: Image.Image, fit: str = "crop") -> Image.Image:
    """The 9:16 cover: centre crop (no stretching) or letterbox, even width and height."""
    from PIL import Image as PILImage

    return PILImage.fromarray(policy.fit_frame(np.asarray(picture.convert("RGB")), fit))


class DiffusionVideo(DiffusionBackend, VideoBackend):
    """A diffusers text-to-video (or cover-to-video) backend.

    The model runs at its own size and frame count (see :mod:`.specs`); the clip then
    reaches 9:16 and exactly 3.0 s by the ``fit`` and ``duration`` policies
    (:mod:`.policy`), recorded in the clip's metadata.
    """

    options_model = VideoOptions

    def request_kwargs(self, request: VideoRequest) -> dict[str, Any]:
        """The exact pipeline arguments for ``request`` (less the generator)."""
        opts = self.opts
        kwargs = self.call_kwargs(request.prompt, request.negative_prompt)
        if request.width and request.height and not self.spec.fixed_size:
            kwargs.update(width=request.width, height=request.height)
        width, height = kwargs["width"], kwargs["height"]
        fps = float(opts.fps or 8)
        kwargs["num_frames"] = opts.frames or self.spec.frames_for(request.seconds, fps)
        if self._accepts("frame_rate"):
            kwargs["frame_rate"] = int(round(fps))
        if opts.from_cover:
            if request.cover is None:
                raise RenderError(
                    f"--video-from-cover is on but no cover was given to '{self.name}'",
                    "render the cover first (the pipeline does) or drop --video-from-cover",
                )
            kwargs["image"] = policy.cover_for_model(request.cover, width, height)
        return kwargs

    def generate(self, request: VideoRequest) -> Clip:
        opts = self.opts
        out = self.run(self.request_kwargs(request), request.seed)
        self.check_finite(out.frames[0])
        video = to_uint8(out.frames[0])  # (frames, H, W, 3)
        generated = [np.ascontiguousarray(frame[..., :3]) for frame in video]
        fps = float(opts.fps or 8)
        gen_h, gen_w = generated[0].shape[:2]
        fitted = [policy.fit_frame(frame, opts.fit) for frame in generated]
        duration = opts.duration or "trim"
        try:
            frames, out_fps = policy.fit_duration(fitted, fps, duration)
        except ValueError as exc:
            raise RenderError(
                f"the '{self.name}' video backend: {exc}",
                "use --video-opt duration=retime or duration=resample",
            ) from exc
        out_h, out_w = frames[0].shape[:2]
        meta = {
            "model": self.model_id(),
            "generated_frames": len(generated),
            "generated_size": f"{gen_w}x{gen_h}",
            "generated_fps": fps,
            "fit": opts.fit,
            "duration": duration,
            "policy": (
                f"generated {gen_w}x{gen_h} x {len(generated)} frames at {fps:g} fps; "
                f"{opts.fit} to {out_w}x{out_h}; {duration} to {len(frames)} frames at "
                f"{out_fps:g} fps (3.0 s)"
            ),
            "from_cover": opts.from_cover,
            **{k: v for k, v in self.last_run.items() if k != "seed"},
        }
        if self.plan is not None:
            meta.update(self.plan.record())
        return Clip(frames=frames, fps=out_fps, meta=meta)
