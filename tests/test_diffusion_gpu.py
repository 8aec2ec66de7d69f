"""The tiny diffusers pipelines on a CUDA GPU: half precision, offload paths, measured
peak memory and the memory plan against the real device.

Run on a GPU machine with:  python -m pytest -m gpu tests/test_diffusion_gpu.py
(skipped, not failed, when no CUDA device is present)."""

from __future__ import annotations

import numpy as np
import pytest

import diffusion_fixtures as fx
from llmpopcorn.backends.base import ImageRequest, VideoRequest
from llmpopcorn.backends.diffusion import memory
from llmpopcorn.backends.diffusion.options import resolve_options
from llmpopcorn.registry import registry

pytestmark = pytest.mark.gpu

tiny_models = fx.tiny_models
single_torch_thread = fx.single_torch_thread  # autouse


@pytest.fixture(scope="module", autouse=True)
def _needs_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def make(tiny_models, name, **overrides):
    kind = "image" if name in fx.IMAGE_NAMES else "video"
    cls = registry.get(kind, name)
    raw = fx.tiny_options(name, tiny_models(name), device="cuda", **overrides)
    return cls.prepare(resolve_options(cls.spec, raw, device="cuda"))


def run(backend, seed=1):
    if backend.kind == "image":
        return np.asarray(backend.generate(ImageRequest(prompt="a corgi surfs", seed=seed)))
    clip = backend.generate(VideoRequest(prompt="a corgi surfs", seed=seed))
    assert len(clip.frames) == backend.opts.frames
    return np.stack(clip.frames)


@pytest.mark.parametrize("name", fx.IMAGE_NAMES + fx.VIDEO_NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_tiny_pipelines_run_on_cuda(tiny_models, name, dtype):
    backend = make(tiny_models, name, dtype=dtype)
    pixels = run(backend)
    assert pixels.dtype == np.uint8 and pixels.size
    measured = backend.last_run
    assert measured["peak_memory_source"] == "cuda" and measured["peak_memory_gb"] > 0
    assert backend.plan.fits and backend.plan.memory.device.startswith("cuda")


@pytest.mark.parametrize("name", ["sd15", "ltx", "wan"])
@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_paths_give_the_same_picture(tiny_models, name, offload):
    plain = run(make(tiny_models, name))
    offloaded = run(make(tiny_models, name, offload=offload, vae_tiling="true"))
    # same seed, same weights: offload moves weights, it does not change the maths
    assert np.abs(plain.astype(int) - offloaded.astype(int)).mean() < 2.0


def test_same_seed_same_result_on_cuda(tiny_models):
    backend = make(tiny_models, "ltx")
    assert np.array_equal(run(backend, 5), run(backend, 5))


def test_device_memory_reads_the_real_card():
    info = memory.device_memory("cuda")
    assert 0 < info.free_gb <= info.total_gb and info.host_free_gb > 0
