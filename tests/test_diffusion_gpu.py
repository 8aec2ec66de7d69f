"""The GPU test plan for the diffusers backends (issue 13): the tiny mimics of the real
models on a CUDA device, no download (the weights are built from configs).

    python -m pytest -m gpu tests/test_diffusion_gpu.py      # a few minutes on one GPU

What it checks, each row of the printed table one run:

* every backend's default preset (scaled sizes, real frame rules) in bfloat16 and
  float16, and with dtype=auto (the per-component dtypes: HunyuanVideo's transformer in
  bf16 with the rest in fp16, Wan's VAE in fp32);
* every image-to-video path (LTX, CogVideoX I2V with learned positional embeddings,
  Wan I2V);
* bitsandbytes 4-bit with each offload mode: none and model run, with the 4-bit layers
  computing in bfloat16 and every component on the device; sequential is refused at
  option validation (diffusers #10800);
* on a machine with two GPUs, bnb 4-bit on cuda:1 keeps every component on cuda:1;
* torchao int8 weight-only on CUDA;
* the memory planner's estimate against the measured peak, and seconds per step.

Skipped, not failed, without CUDA; the table then says so. Tests that need
bitsandbytes or torchao are skipped (with the reason in the table) when missing.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import diffusion_fixtures as fx
from llmpopcorn.backends.base import ImageRequest, VideoRequest
from llmpopcorn.backends.diffusion import memory
from llmpopcorn.backends.diffusion.options import resolve_options
from llmpopcorn.core.errors import ConfigError

pytestmark = pytest.mark.gpu

tiny_models = fx.tiny_models

ROWS: list[dict] = []
COLUMNS = (
    "test",
    "backend",
    "dtype",
    "quant",
    "offload",
    "device",
    "frames",
    "s/step",
    "peak GB",
    "plan GB",
    "result",
)


@pytest.fixture(scope="module", autouse=True)
def _table(request):
    """Print what ran (captured output off, so `pytest -m gpu` shows it)."""
    yield
    lines = [" | ".join(COLUMNS)]
    for row in ROWS:
        lines.append(" | ".join(str(row.get(c, "")) for c in COLUMNS))
    if not ROWS:
        lines.append("(nothing ran: no CUDA device)")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n\nGPU test plan (issue 13): tiny mimics of the real models\n" + "\n".join(lines))


@pytest.fixture(scope="module", autouse=True)
def _needs_cuda(_table):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def make(tiny_models, name, device="cuda", from_cover=False, **overrides):
    cls = fx.tiny_class(name)
    raw = fx.tiny_options(name, tiny_models(name), device=device, **overrides)
    if from_cover and f"{name}-i2v" in fx.BUILDERS:
        raw["i2v_model"] = str(tiny_models(f"{name}-i2v"))
    return cls.prepare(resolve_options(cls.spec, raw, device=device, from_cover=from_cover))


def cover() -> object:
    from PIL import Image

    ramp = np.linspace(0, 255, 160, dtype=np.uint8)[:, None].repeat(90, axis=1)
    return Image.fromarray(np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], axis=-1))


def run(backend, test: str, seed: int = 1) -> np.ndarray:
    """Render once (finite frames are checked by the backend), record a table row."""
    started = time.perf_counter()
    if backend.kind == "image":
        pixels = np.asarray(backend.generate(ImageRequest(prompt="a corgi surfs", seed=seed)))
        frames = 1
    else:
        request = VideoRequest(prompt="a corgi surfs", seed=seed, cover=cover())
        clip = backend.generate(request)
        assert clip.seconds == pytest.approx(3.0) and len(clip.frames) == backend.opts.out_frames
        pixels, frames = np.stack(clip.frames), clip.meta["generated_frames"]
    measured, opts = backend.last_run, backend.opts
    assert measured["peak_memory_source"] == "cuda" and measured["peak_memory_gb"] > 0
    ROWS.append(
        {
            "test": test,
            "backend": backend.name + (" i2v" if opts.from_cover else ""),
            "dtype": opts.dtype + ("*" if opts.component_dtypes else ""),
            "quant": opts.quantization,
            "offload": opts.offload,
            "device": opts.device,
            "frames": frames,
            "s/step": measured["seconds_per_step"],
            "peak GB": measured["peak_memory_gb"],
            "plan GB": round(backend.plan.estimate.peak_gb, 3),
            "result": f"ok in {time.perf_counter() - started:.1f} s",
        }
    )
    # the planner is conservative: the measured peak stays under its estimate
    assert measured["peak_memory_gb"] <= backend.plan.estimate.peak_gb
    assert pixels.dtype == np.uint8 and pixels.std() > 0
    return pixels


def skipped(test: str, name: str, reason: str, **cols) -> None:
    ROWS.append({"test": test, "backend": name, "result": f"skipped: {reason}", **cols})
    pytest.skip(reason)


@pytest.mark.parametrize("name", fx.IMAGE_NAMES + fx.VIDEO_NAMES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "auto"])
def test_default_preset_on_cuda(tiny_models, name, dtype):
    backend = make(tiny_models, name, dtype=dtype)
    run(backend, "preset")
    if dtype == "auto" and backend.opts.component_dtypes:
        import torch

        pipe, want = backend.pipe, backend.opts.component_dtypes
        for component in ("vae", "text_encoder", "transformer", "image_encoder"):
            module = getattr(pipe, component, None)
            if module is not None:
                expected = want.get(component, want["default"])
                assert module.dtype == getattr(torch, expected), component


@pytest.mark.parametrize("name", ["ltx", "cogvideox", "wan"])
def test_image_to_video_on_cuda(tiny_models, name):
    if name == "wan":
        pytest.importorskip("ftfy")
    run(make(tiny_models, name, from_cover=True, dtype="bfloat16"), "i2v")


@pytest.mark.parametrize("name", ["hunyuan", "sd15"])
@pytest.mark.parametrize("offload", ["none", "model", "sequential"])
def test_bnb_4bit_with_each_offload_mode(tiny_models, name, offload):
    if not _has("bitsandbytes"):
        skipped("bnb-4bit", name, "bitsandbytes not installed", offload=offload)
    import torch

    options = {"quantization": "bnb-4bit", "offload": offload, "dtype": "bfloat16"}
    if offload == "sequential":  # refused before loading (diffusers #10800)
        with pytest.raises(ConfigError, match="does not work"):
            make(tiny_models, name, **options)
        ROWS.append(
            {
                "test": "bnb-4bit",
                "backend": name,
                "offload": offload,
                "result": "refused at validation (expected)",
            }
        )
        return
    backend = make(tiny_models, name, **options)
    run(backend, "bnb-4bit")
    import bitsandbytes as bnb

    denoiser = getattr(backend.pipe, "transformer", None) or backend.pipe.unet
    layers = [m for m in denoiser.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.compute_dtype == torch.bfloat16 for m in layers)  # fault 6


def test_bnb_4bit_on_the_second_gpu_keeps_every_component_there(tiny_models):
    import torch

    if torch.cuda.device_count() < 2:
        skipped("cuda:1", "hunyuan", "needs two GPUs", device="cuda:1")
    if not _has("bitsandbytes"):
        skipped("cuda:1", "hunyuan", "bitsandbytes not installed", device="cuda:1")
    backend = make(tiny_models, "hunyuan", device="cuda:1", quantization="bnb-4bit")
    run(backend, "cuda:1")
    for name, component in backend.pipe.components.items():
        if isinstance(component, torch.nn.Module):
            assert {p.device for p in component.parameters()} == {torch.device("cuda:1")}, name


def test_torchao_int8_on_cuda(tiny_models):
    if not _has("torchao"):
        skipped("torchao", "sd15", "torchao not installed")
    run(make(tiny_models, "sd15", quantization="torchao-int8", dtype="bfloat16"), "torchao")


@pytest.mark.parametrize("name", ["sd15", "ltx", "wan"])
@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_paths_give_the_same_picture(tiny_models, name, offload):
    plain = run(make(tiny_models, name), "offload-ref")
    offloaded = run(make(tiny_models, name, offload=offload, vae_tiling="true"), "offload")
    # same seed, same weights: offload moves weights, it does not change the maths
    assert np.abs(plain.astype(int) - offloaded.astype(int)).mean() < 2.0


def test_same_seed_same_result_on_cuda(tiny_models):
    backend = make(tiny_models, "ltx")
    assert np.array_equal(run(backend, "seed", 5), run(backend, "seed", 5))


def test_device_memory_reads_the_real_card():
    info = memory.device_memory("cuda")
    assert 0 < info.free_gb <= info.total_gb and info.host_free_gb > 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
