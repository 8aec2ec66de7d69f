"""Every diffusers backend, run for 2 steps on the CPU with a tiny random pipeline that
was built from configs and saved to a folder (no download), through our wrapper: the
real local loading path, seeding, the call, conversion and the MP4/PNG export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import diffusion_fixtures as fx
from llmpopcorn.backends.base import ImageRequest, VideoRequest
from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.media import fit_duration, probe_mp4, save_png, write_mp4
from llmpopcorn.pipeline import Pipeline
from llmpopcorn.report import load_record
from llmpopcorn.settings import Settings

tiny_models = fx.tiny_models  # session fixtures shared with the other diffusion tests
single_torch_thread = fx.single_torch_thread  # autouse
tiny_backends = fx.tiny_backends
tiny_options = fx.tiny_options

IDEA = json.dumps(
    {
        "title": "Corgi surfs the big wave",
        "cover_prompt": "a corgi on a surfboard, golden hour",
        "video_prompt": "the corgi rides a wave and barks",
    }
)


@pytest.mark.parametrize("name", fx.IMAGE_NAMES)
def test_image_backend_renders_a_9x16_cover(name, tiny_backends, tmp_path):
    backend = tiny_backends(name)
    cover = backend.generate(ImageRequest(prompt="a corgi surfs", seed=3))
    path = save_png(cover, tmp_path / "cover.png")
    with Image.open(path) as saved:
        width, height = saved.size
    opts = backend.opts
    # centre-crop policy: the generated width is kept, the height cut to 9:16 (even)
    assert width == opts.width and abs(width / height - 9 / 16) < 0.02 and height <= opts.height
    assert np.asarray(cover).std() > 0  # not a blank image
    measured = backend.options()["measured"]
    assert measured["seconds_per_step"] > 0 and measured["peak_memory_gb"] > 0
    assert measured["generated_size"] == f"{opts.width}x{opts.height}"


@pytest.mark.parametrize("name", fx.VIDEO_NAMES)
def test_video_backend_renders_a_3_second_h264_clip(name, tiny_backends, tmp_path):
    backend = tiny_backends(name)
    opts, spec = backend.opts, backend.spec
    clip = backend.generate(VideoRequest(prompt="a corgi surfs", seed=3))
    assert len(clip.frames) == opts.frames and spec.valid_frames(len(clip.frames))
    assert clip.frames[0].shape == (opts.height, opts.width, 3)
    assert clip.frames[0].dtype == np.uint8 and clip.fps == opts.fps
    assert clip.meta["generated_frames"] == opts.frames
    assert clip.meta["seconds_per_step"] > 0 and clip.meta["peak_memory_gb"] > 0
    clip.frames = fit_duration(clip.frames, clip.fps, 3.0)
    info = probe_mp4(write_mp4(clip, tmp_path / "clip.mp4"))
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"]) == (opts.width, opts.height)
    assert info["frames"] == round(3.0 * opts.fps) and info["seconds"] == pytest.approx(3.0)


def test_same_seed_same_pixels_other_seed_differs(tiny_backends):
    backend = tiny_backends("sd15")
    a = np.asarray(backend.generate(ImageRequest(prompt="a corgi", seed=7)))
    b = np.asarray(backend.generate(ImageRequest(prompt="a corgi", seed=7)))
    c = np.asarray(backend.generate(ImageRequest(prompt="a corgi", seed=8)))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_video_seed_determinism(tiny_backends):
    backend = tiny_backends("wan")
    a = backend.generate(VideoRequest(prompt="waves", seed=1)).frames
    b = backend.generate(VideoRequest(prompt="waves", seed=1)).frames
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_video_from_cover_uses_the_image_to_video_pipeline(tiny_backends):
    backend = tiny_backends("ltx", from_cover=True)
    cover = Image.new("RGB", (90, 160), (200, 30, 30))
    clip = backend.generate(VideoRequest(prompt="the corgi surfs", seed=1, cover=cover))
    assert type(backend.pipe).__name__ == "LTXImageToVideoPipeline"
    assert clip.meta["from_cover"] is True and len(clip.frames) == backend.opts.frames
    with pytest.raises(Exception, match="no cover"):
        backend.generate(VideoRequest(prompt="x", seed=1))


@pytest.mark.parametrize("name", ["cogvideox", "wan"])
def test_video_from_cover_with_separate_image_to_video_weights(name, tiny_models):
    from llmpopcorn.backends.diffusion.options import resolve_options
    from llmpopcorn.registry import registry

    if name == "wan":
        pytest.importorskip("ftfy")  # diffusers' Wan image-to-video cleans prompts with ftfy
    cls = registry.get("video", name)
    raw = tiny_options(name, tiny_models(name), i2v_model=str(tiny_models(f"{name}-i2v")))
    backend = cls.prepare(resolve_options(cls.spec, raw, device="cpu", from_cover=True))
    assert backend.model_id().endswith(f"{name}-i2v")
    cover = Image.new("RGB", (90, 160), (20, 200, 30))
    clip = backend.generate(VideoRequest(prompt="the corgi surfs", seed=1, cover=cover))
    assert type(backend.pipe).__name__ == cls.spec.i2v_pipeline
    assert len(clip.frames) == backend.opts.frames and clip.meta["from_cover"] is True


def _settings(tmp_path, tiny_models, **kw):
    return Settings.resolve(
        env={},
        out_dir=tmp_path / "runs",
        score=False,
        image="sd15",
        video="ltx",
        device="cpu",
        image_options=tiny_options("sd15", tiny_models("sd15")),
        video_options=tiny_options("ltx", tiny_models("ltx")),
        **kw,
    )


def test_pipeline_make_end_to_end_with_sd15_and_ltx(tmp_path, tiny_models):
    settings = _settings(tmp_path, tiny_models, video_from_cover=True)
    record = Pipeline(settings, llm=FakeLLM([IDEA])).make("a corgi learns to surf")
    assert record.status == "ok"
    run_dir = tmp_path / "runs" / record.run_dir.split("/")[-1]
    saved = load_record(run_dir)
    assert saved.backends["image"].name == "sd15" and saved.backends["video"].name == "ltx"
    assert saved.backends["image"].options["measured"]["seconds_per_step"] > 0
    clip = saved.artifact("clip")
    assert clip.meta["frames"] == 24 and clip.meta["from_cover"] is True
    assert clip.meta["seconds"] == 3.0 and clip.meta["render_seconds"] > 0
    assert clip.meta["generated_frames"] == 25  # 8k+1 at 8 fps, then trimmed to 3.0 s
    assert clip.meta["peak_memory_gb"] > 0 and "estimated_peak_gb" in clip.meta
    info = probe_mp4(run_dir / "clip.mp4")
    assert info["codec"] == "h264" and info["frames"] == 24 and info["seconds"] == pytest.approx(3)
    with Image.open(run_dir / "cover.png") as cover:
        assert cover.size == (72, 128)


def test_cli_make_with_sd15_and_ltx(tmp_path, tiny_models, monkeypatch):
    from llmpopcorn.cli import main

    def opts(name, flag):
        out = []
        for key, value in tiny_options(name, tiny_models(name)).items():
            out += [flag, f"{key}={value}"]
        return out

    args = [
        "make",
        "a corgi learns to surf",
        "--image",
        "sd15",
        "--video",
        "ltx",
        "--device",
        "cpu",
        "--no-score",
        "--out",
        str(tmp_path / "runs"),
        "--json",
    ]
    args += opts("sd15", "--image-opt") + opts("ltx", "--video-opt")
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "ok" and record["backends"]["video"]["name"] == "ltx"
    assert {a["kind"] for a in record["artifacts"]} == {"cover", "clip"}


def test_make_fails_before_the_llm_without_weights(tmp_path):
    settings = Settings.resolve(
        env={}, out_dir=tmp_path / "runs", score=False, image="sd15", video="ltx", device="cpu"
    )
    llm = FakeLLM([])  # would raise AssertionError if it were asked anything
    with pytest.raises(Exception) as info:
        Pipeline(settings, llm=llm).make("a corgi learns to surf")
    err = info.value
    assert type(err).__name__ == "WeightsMissingError"
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in err.message
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in err.hint
    assert "GB" in err.hint and llm.requests == []


def test_make_fails_before_loading_without_memory(tmp_path, tiny_models, monkeypatch):
    from llmpopcorn.backends.diffusion import memory

    tiny = memory.DeviceMemory("cpu", total_gb=0.2, free_gb=0.05)
    monkeypatch.setattr(memory, "device_memory", lambda device: tiny)
    llm = FakeLLM([])
    with pytest.raises(memory.MemoryPlanError, match="needs about") as info:
        Pipeline(_settings(tmp_path, tiny_models), llm=llm).make("a corgi learns to surf")
    assert "only 0.1 GB of 0.2 GB is free" in info.value.message
    assert "memory_check=false" in info.value.hint and llm.requests == []


def test_animatediff_base_model_plus_separate_motion_adapter(tmp_path):
    from llmpopcorn.backends.diffusion.models import AnimateDiff
    from llmpopcorn.backends.diffusion.options import resolve_options

    base, adapter = fx.save_animatediff_base_and_adapter(tmp_path)
    raw = tiny_options("animatediff", base, adapter=str(adapter))
    backend = AnimateDiff.prepare(resolve_options(AnimateDiff.spec, raw, device="cpu"))
    assert backend.opts.adapter == str(adapter)
    clip = backend.generate(VideoRequest(prompt="a corgi surfs", seed=2))
    assert type(backend.pipe).__name__ == "AnimateDiffPipeline" and len(clip.frames) == 8
    # the Lightning scheduler settings from the spec replace the base model's scheduler
    assert backend.pipe.scheduler.config.timestep_spacing == "trailing"
    missing = resolve_options(AnimateDiff.spec, {"model": str(base)}, device="cpu")
    with pytest.raises(Exception, match="motion adapter") as info:
        AnimateDiff.prepare(missing)  # the default adapter is not in the (empty) HF cache
    assert "hf download ByteDance/AnimateDiff-Lightning animatediff_lightning" in info.value.hint


def test_dtype_and_vae_options_reach_the_loaded_pipeline(tiny_backends):
    import torch

    backend = tiny_backends("ltx", dtype="bfloat16", vae_tiling=True, vae_slicing=True)
    clip = backend.generate(VideoRequest(prompt="a corgi surfs", seed=3))
    pipe = backend.pipe
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vae.use_tiling
    assert len(clip.frames) == backend.opts.frames and clip.frames[0].dtype == np.uint8
    # the plan used the sizes read from the tiny weights, not LTX-Video's 7B parameters
    assert backend.plan.estimate.weights_gb < 0.01 and backend.plan.fits
