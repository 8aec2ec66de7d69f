"""One shared implementation for every diffusers backend: plan, load, seed, call, convert.

A backend is a :class:`~.specs.ModelSpec` plus this code. ``from_settings`` does
everything that can fail cheaply, before any weight is read: it validates the
options, finds the weights (local folder or local Hugging Face cache) and checks the
memory plan. The pipeline is loaded on the first ``generate`` call, with
``local_files_only=True``, and kept for later calls.
"""

from __future__ import annotations

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

from ...errors import MissingExtraError, RenderError, require
from ..base import Availability, Clip, ImageBackend, ImageRequest, VideoBackend, VideoRequest
from . import memory as mem
from .options import Resolved, resolve_options
from .specs import ModelSpec
from .weights import fetch_command, find, locate, measured_sizes, model_index

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ...settings import Settings

log = logging.getLogger(__name__)

GPU_MODULES = ("torch", "diffusers", "transformers", "huggingface_hub")
QUANT_BACKENDS = {
    "bnb-4bit": ("bitsandbytes_4bit", {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}),
    "bnb-8bit": ("bitsandbytes_8bit", {"load_in_8bit": True}),
    "torchao-int8": ("torchao", {"quant_type": "int8wo"}),
}


def _settings_options(settings: Settings | None, kind: str, name: str) -> dict[str, Any]:
    """This backend's user options: only when it is the selected backend of its kind."""
    if settings is None or getattr(settings, kind, None) != name:
        return {}
    return dict(getattr(settings, f"{kind}_options", None) or {})


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
        raw = _settings_options(settings, cls.kind, cls.name)
        from_cover = bool(getattr(settings, "video_from_cover", False)) and cls.kind == "video"
        opts = resolve_options(cls.spec, raw, device=settings.device, from_cover=from_cover)
        return cls.prepare(opts)

    @classmethod
    def prepare(cls, opts: Resolved, *, memory: mem.DeviceMemory | None = None) -> DiffusionBackend:
        """Find the weights and check the memory plan for resolved options."""
        spec = cls.spec
        ref = opts.i2v_model if opts.from_cover and opts.i2v_model else opts.model
        weights = locate(ref, spec)
        if opts.adapter and spec.adapter_id and "motion_adapter" not in model_index(weights):
            locate(opts.adapter, spec, what="motion adapter", size_gb=0.9)
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
        raw = _settings_options(settings, cls.kind, cls.name)
        ref = raw.get("model") or cls.spec.model_id
        found = find(str(ref))
        if found is None:
            return Availability(
                False,
                f"weights not found locally: {fetch_command(str(ref))} "
                f"(~{cls.spec.download_gb:.0f} GB)",
            )
        adapter = raw.get("adapter") or cls.spec.adapter_id
        if adapter and found.is_dir() and "motion_adapter" not in model_index(found):
            if find(str(adapter)) is None:
                return Availability(
                    False,
                    f"motion adapter not found locally: {fetch_command(str(adapter))} (~1 GB)",
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
        kwargs: dict[str, Any] = {
            "torch_dtype": getattr(torch, opts.dtype),
            "local_files_only": True,
        }
        if opts.quantization != "none":
            backend, quant_kwargs = QUANT_BACKENDS[opts.quantization]
            kwargs["quantization_config"] = diffusers.PipelineQuantizationConfig(
                quant_backend=backend,
                quant_kwargs=quant_kwargs,
                components_to_quantize=[
                    c for c in ("transformer", "unet") if c in model_index(path)
                ],
            )
        if opts.adapter:
            kwargs["motion_adapter"] = self._load_adapter(diffusers, torch)
        started = time.perf_counter()
        cls = getattr(diffusers, self._pipeline_class())
        try:
            pipe = cls.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError) as exc:
            raise RenderError(
                f"could not load {spec.title} from {path}: {exc}",
                "check that the folder is a complete diffusers pipeline; "
                f"re-fetch it with `hf download {self.model_id()}` on a connected machine",
            ) from exc
        if spec.scheduler:
            config = dict(spec.scheduler)
            sched_cls = getattr(diffusers, config.pop("class"))
            pipe.scheduler = sched_cls.from_config(pipe.scheduler.config, **config)
        self._place(pipe, torch)
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
        else:  # bitsandbytes places its weights on the GPU while loading; move the rest
            for name, component in pipe.components.items():
                if isinstance(component, torch.nn.Module) and name not in ("transformer", "unet"):
                    component.to(opts.device)
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

        def on_step(_pipe: Any, _step: int, _t: Any, callback_kwargs: dict) -> dict:
            stamps.append(time.perf_counter())
            return callback_kwargs

        cuda = self.opts.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.opts.device)
        # a CPU generator gives the same noise whatever the device or offload mode
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                out = pipe(**kwargs, generator=generator, callback_on_step_end=on_step)
        except torch.cuda.OutOfMemoryError as exc:  # the plan was wrong: say what to change
            raise mem.MemoryPlanError(
                f"{self.spec.title} ran out of GPU memory: {exc}".splitlines()[0],
                f"try --{self.kind}-opt offload=model, vae_tiling=true or a lower resolution",
            ) from exc
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


def crop_to_aspect(image: Image.Image, width: int, height: int) -> Image.Image:
    """Centre-crop ``image`` to the aspect ratio width:height (never stretches)."""
    w, h = image.size
    if w * height > h * width:  # too wide
        new_w = max(1, round(h * width / height))
        left = (w - new_w) // 2
        return image.crop((left, 0, left + new_w, h))
    new_h = max(1, round(w * height / width))
    top = (h - new_h) // 2
    return image.crop((0, top, w, top + new_h))


class DiffusionImage(DiffusionBackend, ImageBackend):
    """A diffusers text-to-image backend; the cover is centre-cropped to 9:16."""

    def request_kwargs(self, request: ImageRequest) -> dict[str, Any]:
        """The exact pipeline arguments for ``request`` (less the generator)."""
        kwargs = self.call_kwargs(request.prompt, request.negative_prompt)
        if request.width and request.height:
            kwargs.update(width=request.width, height=request.height)
        return kwargs

    def generate(self, request: ImageRequest) -> Image.Image:
        from PIL import Image as PILImage

        out = self.run(self.request_kwargs(request), request.seed)
        picture = PILImage.fromarray(to_uint8(out.images[0]))
        self.last_run["generated_size"] = f"{picture.width}x{picture.height}"
        return to_cover(picture)


def to_cover(picture: Image.Image) -> Image.Image:
    """The 9:16 cover policy: centre-crop (no stretching), even width and height."""
    cover = crop_to_aspect(picture, 9, 16)
    return cover.crop((0, 0, cover.width - cover.width % 2, cover.height - cover.height % 2))


class DiffusionVideo(DiffusionBackend, VideoBackend):
    """A diffusers text-to-video (or cover-to-video) backend."""

    def request_kwargs(self, request: VideoRequest) -> dict[str, Any]:
        """The exact pipeline arguments for ``request`` (less the generator)."""
        from PIL import Image as PILImage

        opts = self.opts
        kwargs = self.call_kwargs(request.prompt, request.negative_prompt)
        if request.width and request.height:
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
            cover = crop_to_aspect(request.cover.convert("RGB"), width, height)
            kwargs["image"] = cover.resize((width, height), PILImage.Resampling.LANCZOS)
        return kwargs

    def generate(self, request: VideoRequest) -> Clip:
        out = self.run(self.request_kwargs(request), request.seed)
        video = to_uint8(out.frames[0])  # (frames, H, W, 3)
        clip_frames = [np.ascontiguousarray(frame[..., :3]) for frame in video]
        meta = {
            "model": self.model_id(),
            "generated_frames": len(clip_frames),
            "from_cover": self.opts.from_cover,
            **{k: v for k, v in self.last_run.items() if k != "seed"},
        }
        if self.plan is not None:
            meta.update(self.plan.record())
        return Clip(frames=clip_frames, fps=float(self.opts.fps or 8), meta=meta)
