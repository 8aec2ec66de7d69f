"""Memory planner: estimate peak memory before loading, and say what would fit.

The estimate is a heuristic from the spec's parameter counts and per-model
activation/decode coefficients (calibrated loosely against published numbers; expect
+-30 %). It models the choices that matter: dtype, transformer quantization, CPU
offload (model or sequential) and VAE tiling. When the plan does not fit the device,
:func:`check` raises before any weight is read, listing option sets that would fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from llmpopcorn.backends.diffusion.options import Resolved, combination_problem
from llmpopcorn.backends.diffusion.specs import ModelSpec
from llmpopcorn.core.errors import RenderError

GB = 1e9
BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0}
#: bytes per parameter of a quantized denoiser (weights + scales)
QUANT_BYTES = {"bnb-4bit": 0.6, "bnb-8bit": 1.1, "torchao-int8": 1.05}
CUDA_OVERHEAD_GB = 0.6  # context, kernels, allocator slack
TILED_DECODE_GB = 1.5  # VAE working memory with tiling, at half precision
#: fraction of the device's free memory the plan may use
HEADROOM = 0.92


class MemoryPlanError(RenderError):
    """The chosen options will not fit in the device's memory."""


@dataclass(frozen=True)
class DeviceMemory:
    device: str
    total_gb: float
    free_gb: float
    host_free_gb: float | None = None  # CPU RAM, for offloaded weights


@dataclass(frozen=True)
class Sizes:
    """Parameter counts in billions (from the spec, or read from the local weights)."""

    denoiser_b: float
    text_encoders_b: float
    vae_b: float

    @classmethod
    def of(cls, spec: ModelSpec, from_cover: bool = False) -> Sizes:
        denoiser = spec.i2v_denoiser_b if from_cover and spec.i2v_denoiser_b else spec.denoiser_b
        return cls(denoiser, spec.text_encoders_b, spec.vae_b)


@dataclass(frozen=True)
class Estimate:
    weights_gb: float  # all weights at the chosen dtype/quantization
    peak_gb: float  # on the device
    host_gb: float  # CPU RAM held by offloaded weights
    parts: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Alternative:
    changes: dict[str, Any]
    peak_gb: float

    def label(self, flag: str) -> str:
        opts = " ".join(f"{flag} {k}={_fmt(v)}" for k, v in self.changes.items())
        return f"{opts}: ~{self.peak_gb:.1f} GB"


@dataclass(frozen=True)
class MemoryPlan:
    estimate: Estimate
    memory: DeviceMemory
    budget_gb: float
    alternatives: list[Alternative]

    @property
    def fits(self) -> bool:
        return self.estimate.peak_gb <= self.budget_gb

    def record(self) -> dict[str, Any]:
        return {
            "estimated_peak_gb": round(self.estimate.peak_gb, 2),
            "device_free_gb": round(self.memory.free_gb, 2),
        }


def _fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _mvox(opts: Resolved) -> float:
    return opts.width * opts.height * (opts.frames or 1) / 1e6


def estimate(spec: ModelSpec, opts: Resolved, sizes: Sizes | None = None) -> Estimate:
    """Peak device memory (GB) for ``opts``; ``sizes`` default to the spec's."""
    sizes = sizes or Sizes.of(spec, opts.from_cover)
    bpp = BYTES[opts.dtype]
    dtypes = opts.component_dtypes or {}
    other_bpp = BYTES[dtypes.get("default", opts.dtype)]
    den_bpp = QUANT_BYTES.get(opts.quantization, bpp)
    denoiser = sizes.denoiser_b * den_bpp
    text = sizes.text_encoders_b * other_bpp
    vae = sizes.vae_b * BYTES[dtypes.get("vae", dtypes.get("default", opts.dtype))]
    scale = bpp / 2.0  # coefficients are for half precision
    act = spec.act_gb_per_mvox * _mvox(opts) * scale
    decode = spec.decode_gb_per_mvox * _mvox(opts) * scale
    if opts.vae_tiling:
        decode = min(decode, TILED_DECODE_GB * scale)
    overhead = CUDA_OVERHEAD_GB if opts.device.startswith("cuda") else 0.3
    weights = denoiser + text + vae
    if opts.offload == "model":
        # one component on the device at a time
        peak = max(text, denoiser + act, vae + decode)
        host = weights
    elif opts.offload == "sequential":
        # one layer at a time; the largest layer is a small slice of the denoiser
        peak = min(1.0, 0.05 * denoiser) + max(act, decode)
        host = weights
    else:
        peak = weights + max(act, decode)
        host = 0.0
    parts = {
        "denoiser": denoiser,
        "text_encoders": text,
        "vae": vae,
        "activations": act,
        "decode": decode,
        "overhead": overhead,
    }
    return Estimate(weights_gb=weights, peak_gb=peak + overhead, host_gb=host, parts=parts)


def _candidates(spec: ModelSpec, opts: Resolved) -> list[dict[str, Any]]:
    """Option changes to try, cheapest in speed first."""
    cands: list[dict[str, Any]] = [{"vae_tiling": True}]
    if opts.device.startswith("cuda"):
        cands += [
            {"offload": "model"},
            {"offload": "model", "vae_tiling": True},
            {"quantization": "bnb-8bit", "vae_tiling": True},
            {"quantization": "bnb-4bit", "vae_tiling": True},
            {"quantization": "bnb-4bit", "offload": "model", "vae_tiling": True},
            {"offload": "sequential", "vae_tiling": True},
        ]
    elif opts.dtype == "float32":
        cands += [{"dtype": "bfloat16"}, {"dtype": "bfloat16", "vae_tiling": True}]
    out = []
    for change in cands:
        quant = change.get("quantization", opts.quantization)
        if combination_problem(quant, change.get("offload", opts.offload)):
            change = {**change, "quantization": "none"}  # never suggest what cannot work
            quant = "none"
        if quant != opts.quantization and not _quant_installed(quant):
            continue  # its package is missing here: the option would be refused
        effective = {k: v for k, v in change.items() if getattr(opts, k) != v}
        if effective and effective not in out:
            out.append(effective)
    return out


def _quant_installed(quant: str) -> bool:
    import importlib.util

    from llmpopcorn.backends.diffusion.options import QUANT_PACKAGES

    package = QUANT_PACKAGES.get(quant)
    return package is None or importlib.util.find_spec(package) is not None


def plan(
    spec: ModelSpec, opts: Resolved, memory: DeviceMemory, sizes: Sizes | None = None
) -> MemoryPlan:
    """Estimate for ``opts`` and the alternatives that would fit ``memory``."""
    budget = memory.free_gb * HEADROOM
    est = estimate(spec, opts, sizes)
    alts = []
    for change in _candidates(spec, opts):
        alt = estimate(spec, opts.replace(**change), sizes)
        host_ok = memory.host_free_gb is None or alt.host_gb <= memory.host_free_gb
        if alt.peak_gb <= budget and host_ok:
            alts.append(Alternative(change, alt.peak_gb))
    return MemoryPlan(estimate=est, memory=memory, budget_gb=budget, alternatives=alts)


def check(
    spec: ModelSpec, opts: Resolved, memory: DeviceMemory, sizes: Sizes | None = None
) -> MemoryPlan:
    """:func:`plan`, raising :class:`MemoryPlanError` when it will not fit."""
    result = plan(spec, opts, memory, sizes)
    if result.fits:
        return result
    flag = f"--{spec.kind}-opt"
    est = result.estimate
    message = (
        f"{spec.title} ({spec.name}) needs about {est.peak_gb:.1f} GB on {memory.device} "
        f"with these options, but only {memory.free_gb:.1f} GB of {memory.total_gb:.1f} GB "
        "is free"
    )
    if result.alternatives:
        options = "; ".join(alt.label(flag) for alt in result.alternatives[:4])
        hint = f"options that would fit: {options}"
    else:
        hint = (
            f"nothing fits: lower {flag} width/height/frames, use a lighter backend "
            "(e.g. --video wan or --image sd15), or a device with more memory"
        )
    hint += f" (or {flag} memory_check=false to try anyway)"
    raise MemoryPlanError(message, hint)


def device_memory(device: str) -> DeviceMemory:
    """Free and total memory of ``device`` (``cpu`` or ``cuda[:N]``), in GB."""
    host = _host_free_gb()
    if device.startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info(torch.device(device))
        return DeviceMemory(device, total / GB, free / GB, host)
    return DeviceMemory("cpu", _host_total_gb(), host, None)


def _host_free_gb() -> float:
    try:
        import psutil

        return psutil.virtual_memory().available / GB
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GB


def _host_total_gb() -> float:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GB
