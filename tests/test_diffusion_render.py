"""Every diffusers backend, run for 2 steps on the CPU with a tiny random pipeline that
was built from configs and saved to a folder (no download), through our wrapper: the
real local loading path, seeding, the call, conversion and the MP4/PNG export.

The tiny pipelines mimic the real models' structure (patch sizes, VAE factors,
CogVideoX I2V's learned positional embeddings, AnimateDiff's motion table) and run
each backend's default preset: its frame count, frame rate and 9:16 / 3.0 s policy
(only the pixel sizes are scaled down, see diffusion_fixtures.tiny_spec)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import diffusion_fixtures as fx
from llmpopcorn.backends.base import ImageRequest, VideoRequest
from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.backends.media import probe_mp4, save_png, write_mp4
from llmpopcorn.core.settings import Settings
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.pipeline.report import load_record

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
def test_video_backend_default_preset_gives_a_9x16_3_second_h264_clip(
    name, tiny_backends, tmp_path
):
    backend = tiny_backends(name)
    opts, spec = backend.opts, backend.spec
    clip = backend.generate(VideoRequest(prompt="a corgi surfs", seed=3))
    # generated at the model's own size and frame count...
    assert (opts.width, opts.height) == spec.size_9x16 and spec.valid_frames(opts.frames)
    assert clip.meta["generated_frames"] == opts.frames == spec.default_frames(spec.fps)
    assert clip.meta["generated_size"] == f"{opts.width}x{opts.height}"
    # ...then 9:16 and exactly 3.0 s by the recorded policy
    assert clip.meta["fit"] == spec.fit and clip.meta["duration"] == spec.duration
    assert len(clip.frames) == opts.out_frames and clip.fps == pytest.approx(opts.out_fps)
    assert clip.seconds == pytest.approx(3.0)
    height, width = clip.frames[0].shape[:2]
    assert (width, height) == (opts.out_width, opts.out_height)
    assert abs(width / height - 9 / 16) < 0.1 and width % 2 == height % 2 == 0
    assert clip.frames[0].dtype == np.uint8 and np.stack(clip.frames).std() > 0
    assert clip.meta["seconds_per_step"] > 0 and clip.meta["peak_memory_gb"] > 0
    info = probe_mp4(write_mp4(clip, tmp_path / "clip.mp4"))
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"]) == (width, height)
    assert info["frames"] == len(clip.frames) and info["seconds"] == pytest.approx(3.0, abs=0.01)


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


def _cover() -> Image.Image:
    """A 9:16 cover with structure (a gradient and a block), as an image backend gives."""
    ramp = np.linspace(0, 255, 160, dtype=np.uint8)[:, None].repeat(90, axis=1)
    rgb = np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], axis=-1)
    rgb[60:100, 30:60] = (250, 40, 40)
    return Image.fromarray(rgb)


@pytest.mark.parametrize("name", ["ltx", "cogvideox", "wan"])
def test_every_image_to_video_path_runs_its_default_preset(name, tiny_backends):
    """Fault 1 (issue 13): CogVideoX I2V at 9:16 crashed inside the denoising loop on its
    learned positional embeddings; now every i2v path runs at the model's own size."""
    if name == "wan":
        pytest.importorskip("ftfy")  # diffusers' Wan image-to-video cleans prompts with ftfy
    backend = tiny_backends(name, from_cover=True)
    spec, opts = backend.spec, backend.opts
    clip = backend.generate(VideoRequest(prompt="the corgi surfs", seed=1, cover=_cover()))
    assert type(backend.pipe).__name__ == spec.i2v_pipeline
    assert clip.meta["from_cover"] is True and clip.meta["generated_frames"] == opts.frames
    assert clip.seconds == pytest.approx(3.0) and len(clip.frames) == opts.out_frames
    if spec.i2v_model_id:  # separate image-to-video weights
        assert backend.model_id().endswith(f"{name}-i2v")
    with pytest.raises(Exception, match="no cover"):
        backend.generate(VideoRequest(prompt="x", seed=1))


def test_cogvideox_i2v_mimic_has_the_learned_embeddings_and_gets_their_size(tiny_backends):
    """The mimic is faithful: its learned table refuses any other size inside diffusers
    (the old crash), and our backend feeds it exactly the trained size and frame count
    (fault 5: with another count diffusers silently swaps in a sin-cos table)."""
    backend = tiny_backends("cogvideox", from_cover=True)
    pipe, opts = backend.pipe, backend.opts
    config = pipe.transformer.config
    assert config.use_learned_positional_embeddings is True
    kwargs = backend.request_kwargs(VideoRequest(prompt="x", seed=1, cover=_cover()))
    assert (kwargs["width"] // 8, kwargs["height"] // 8) == (
        config.sample_width,
        config.sample_height,
    )
    assert kwargs["num_frames"] == config.sample_frames == 49
    assert kwargs["image"].size == (kwargs["width"], kwargs["height"])
    swapped = {**kwargs, "width": opts.height, "height": opts.width, "num_inference_steps": 1}
    with pytest.raises(ValueError, match="different resolution"):
        pipe(**swapped)


def test_a_failure_inside_the_pipeline_call_is_our_error_naming_the_option(tiny_backends):
    """Every failure in a pipeline call becomes a RenderError naming backend, option, fix."""
    from llmpopcorn.core.errors import RenderError

    good = tiny_backends("cogvideox", from_cover=True)
    swapped = good.opts.replace(width=good.opts.height, height=good.opts.width)
    bad = type(good)(swapped, weights=good.weights, pipeline=good.pipe)  # skips validation
    with pytest.raises(RenderError) as info:
        bad.generate(VideoRequest(prompt="x", seed=1, cover=_cover()))
    err = info.value
    assert "'cogvideox' video backend" in err.message and "ValueError" in err.message
    assert "width/height" in err.hint and "width=48" in err.hint and "frames=49" in err.hint


def test_nan_output_fails_instead_of_turning_black(tiny_models):
    """A NaN from the model (e.g. a half-precision overflow) must fail, not become black."""
    import torch

    from llmpopcorn.backends.diffusion.options import resolve_options
    from llmpopcorn.core.errors import RenderError

    cls = fx.tiny_class("sd15")
    backend = cls.prepare(
        resolve_options(cls.spec, tiny_options("sd15", tiny_models("sd15")), device="cpu")
    )
    assert np.asarray(backend.generate(ImageRequest(prompt="a corgi", seed=1))).std() > 0
    with torch.no_grad():
        backend.pipe.vae.decoder.conv_out.bias.fill_(float("nan"))
    with pytest.raises(RenderError, match="NaN") as info:
        backend.generate(ImageRequest(prompt="a corgi", seed=1))
    assert "dtype" in info.value.hint
    video = fx.tiny_class("wan")
    wan = video.prepare(
        resolve_options(video.spec, tiny_options("wan", tiny_models("wan")), device="cpu")
    )
    with torch.no_grad():
        wan.pipe.transformer.proj_out.bias.fill_(float("inf"))
    with pytest.raises(RenderError, match="NaN/infinite"):
        wan.generate(VideoRequest(prompt="waves", seed=1))


#: through Settings the registered (full-size) specs apply: give the mimics' sizes
SIZED = {"sd15": {"width": 72, "height": 128}, "ltx": {"width": 32, "height": 64, "fps": 8}}


def _settings(tmp_path, tiny_models, **kw):
    return Settings.resolve(
        env={},
        out_dir=tmp_path / "runs",
        score=False,
        image="sd15",
        video="ltx",
        device="cpu",
        image_options=tiny_options("sd15", tiny_models("sd15"), **SIZED["sd15"]),
        video_options=tiny_options("ltx", tiny_models("ltx"), **SIZED["ltx"]),
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
    assert clip.meta["duration"] == "trim" and clip.meta["fit"] == "crop"
    assert clip.meta["generated_size"] == "32x64" and "crop to 32x56" in clip.meta["policy"]
    assert clip.meta["peak_memory_gb"] > 0 and "estimated_peak_gb" in clip.meta
    info = probe_mp4(run_dir / "clip.mp4")
    assert info["codec"] == "h264" and info["frames"] == 24 and info["seconds"] == pytest.approx(3)
    assert (info["width"], info["height"]) == (32, 56)
    with Image.open(run_dir / "cover.png") as cover:
        assert cover.size == (72, 128)


def test_cli_make_with_sd15_and_ltx(tmp_path, tiny_models, monkeypatch):
    from llmpopcorn.cli import main

    def opts(name, flag):
        out = []
        for key, value in tiny_options(name, tiny_models(name), **SIZED[name]).items():
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
    from llmpopcorn.backends.diffusion.options import resolve_options
    from llmpopcorn.core.registry import registry

    AnimateDiff = registry.get("video", "animatediff")
    base, adapter = fx.save_animatediff_base_and_adapter(tmp_path)
    raw = tiny_options("animatediff", base, adapter=str(adapter), width=16, height=32)
    backend = AnimateDiff.prepare(resolve_options(AnimateDiff.spec, raw, device="cpu"))
    assert backend.opts.adapter == str(adapter)
    clip = backend.generate(VideoRequest(prompt="a corgi surfs", seed=2))
    assert type(backend.pipe).__name__ == "AnimateDiffPipeline"
    # fault 8: the motion modules' 16 trained frames, retimed to 3.0 s (none repeated)
    assert clip.meta["generated_frames"] == 16 and len(clip.frames) == 16
    assert clip.fps == pytest.approx(16 / 3) and clip.seconds == pytest.approx(3.0)
    assert backend.pipe.unet.config.motion_max_seq_length == 32
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
    assert len(clip.frames) == backend.opts.out_frames and clip.frames[0].dtype == np.uint8
    # the plan used the sizes read from the tiny weights, not LTX-Video's 7B parameters
    assert backend.plan.estimate.weights_gb < 0.01 and backend.plan.fits


def test_fault7_component_dtypes_reach_the_loaded_pipeline(tiny_models):
    """Per-component dtypes (Wan: VAE in float32, the rest in bfloat16) are what
    from_pretrained loads, and the mixed pipeline still gives finite frames."""
    import torch

    from llmpopcorn.backends.diffusion.options import resolve_options

    cls = fx.tiny_class("wan")
    opts = resolve_options(cls.spec, tiny_options("wan", tiny_models("wan")), device="cpu")
    mixed = opts.replace(
        dtype="bfloat16", component_dtypes={"default": "bfloat16", "vae": "float32"}
    )
    backend = cls.prepare(mixed)
    clip = backend.generate(VideoRequest(prompt="waves", seed=1))
    pipe = backend.pipe
    assert pipe.vae.dtype == torch.float32 and pipe.transformer.dtype == torch.bfloat16
    assert pipe.text_encoder.dtype == torch.bfloat16
    assert len(clip.frames) == opts.out_frames and np.stack(clip.frames).std() > 0
    assert backend.options()["component_dtypes"] == {"default": "bfloat16", "vae": "float32"}


def test_fault2_torchao_int8_loads_and_renders(tiny_models):
    """The torchao-int8 path end to end on the CPU (torchao's int8 weight-only works
    there too): before, building its config raised ValueError in diffusers 0.42."""
    pytest.importorskip("torchao")
    from llmpopcorn.backends.diffusion.options import resolve_options

    cls = fx.tiny_class("sd15")
    opts = resolve_options(cls.spec, tiny_options("sd15", tiny_models("sd15")), device="cpu")
    backend = cls.prepare(opts.replace(quantization="torchao-int8", dtype="bfloat16"))
    cover = np.asarray(backend.generate(ImageRequest(prompt="a corgi", seed=1)))
    linear = backend.pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    assert (
        "Int8" in type(linear.weight).__name__ or "AffineQuantized" in type(linear.weight).__name__
    )
    assert cover.std() > 0


def test_a_loading_failure_is_our_error_naming_the_option(tiny_models):
    """A quantization that cannot load (here: bitsandbytes missing, validation skipped)
    ends as a RenderError naming the backend, the option and the fix, not a raw error."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed: this failure needs it missing")
    from llmpopcorn.backends.diffusion.options import resolve_options
    from llmpopcorn.core.errors import RenderError

    cls = fx.tiny_class("sd15")
    opts = resolve_options(cls.spec, tiny_options("sd15", tiny_models("sd15")), device="cpu")
    backend = cls.prepare(opts.replace(quantization="bnb-4bit"))
    with pytest.raises(RenderError) as info:
        backend.generate(ImageRequest(prompt="a corgi", seed=1))
    err = info.value
    assert "could not load" in err.message and "(sd15)" in err.message
    assert "quantization=bnb-4bit" in err.message and "quantization=none" in err.hint


#: structural switches of the real checkpoints (their config.json files), which the
#: mimics must share: (VAE spatial factor, VAE temporal factor, denoiser patch size)
REAL_STRUCTURE = {
    "sd15": (8, None, None),
    "sdxl": (8, None, None),
    "flux": (8, None, 1),  # plus FLUX's 2x2 latent packing (in_channels = 4 x latent)
    "ltx": (32, 8, 1),
    "hunyuan": (8, 4, 2),
    "cogvideox": (8, 4, 2),
    "animatediff": (8, None, None),
    "wan": (8, 4, (1, 2, 2)),
}


@pytest.mark.parametrize("name", list(REAL_STRUCTURE))
def test_mimics_share_the_real_models_structure(name, tiny_backends):
    pipe = tiny_backends(name).pipe
    spatial, temporal, patch = REAL_STRUCTURE[name]
    got_spatial = getattr(pipe, "vae_scale_factor_spatial", None) or getattr(
        pipe, "vae_spatial_compression_ratio", None
    )
    assert (got_spatial or pipe.vae_scale_factor) == spatial
    if temporal:
        got = getattr(pipe, "vae_scale_factor_temporal", None) or getattr(
            pipe, "vae_temporal_compression_ratio", None
        )
        assert got == temporal
    if patch is not None:
        got_patch = pipe.transformer.config.patch_size
        assert (tuple(got_patch) if isinstance(got_patch, list) else got_patch) == patch
    if name == "flux":
        assert pipe.transformer.config.in_channels == 4 * pipe.vae.config.latent_channels
    if name == "animatediff":
        assert pipe.unet.config.motion_max_seq_length == 32


# -- cancelling between denoising steps ------------------------------------------------------


class Stop(Exception):
    """A caller's own stop (what a cancelled web job raises)."""


def _denoiser(backend):
    return getattr(backend.pipe, "unet", None) or backend.pipe.transformer


@pytest.fixture(params=["sd15"])
def stepped(request, tiny_backends):
    """A tiny backend at 5 steps and a count of its denoiser calls (hooks removed after)."""
    backend = tiny_backends(request.param, steps=5)
    calls, handles = [0], []

    def count(*_args):
        calls[0] += 1

    handles.append(_denoiser(backend).register_forward_hook(count))
    yield backend, calls, handles
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("stepped", ["sd15", "ltx"], indirect=True)
def test_a_stop_check_ends_a_render_after_the_current_step(stepped):
    from llmpopcorn.backends.diffusion.cancel import stop_check

    backend, calls, _ = stepped
    video = backend.kind == "video"
    request = (VideoRequest if video else ImageRequest)(prompt="a corgi surfs", seed=3)

    def render():
        out = backend.generate(request)
        return np.stack(out.frames) if video else np.asarray(out)

    plain = render()
    full = calls[0]
    assert full >= 5
    checked = []

    def check():  # called after each step: a stop requested once step 1 of 5 is done
        checked.append(len(checked))
        raise Stop("cancelled by the user")

    calls[0] = 0
    with stop_check(check), pytest.raises(Stop, match="cancelled by the user"):
        render()
    assert calls[0] == 1 and checked == [0]  # no step after the stop
    # a check that never stops changes nothing, and the next render runs every step
    calls[0] = 0
    with stop_check(lambda: None):
        same = render()
    assert calls[0] == full and np.array_equal(same, plain)
    assert np.array_equal(render(), plain)  # the interrupt did not stick to the pipeline


def test_cancelling_a_web_job_stops_its_diffusion_render_within_a_step(tmp_path, stepped):
    from llmpopcorn.backends.video.draft import DraftClip
    from llmpopcorn.web.jobs import JobManager
    from llmpopcorn.web.requests import RunRequest

    backend, calls, handles = stepped
    manager = JobManager(Settings.resolve(env={}, out_dir=tmp_path / "runs", score=False))
    jobs = []

    def cancel_on_first_step(*_args):
        if calls[0] == 1:
            manager.cancel(jobs[0].id)  # the user presses Cancel during step 1 of 5

    handles.append(_denoiser(backend).register_forward_hook(cancel_on_first_step))
    manager.factory = lambda s: Pipeline(
        s, llm=FakeLLM([IDEA]), image=backend, video=DraftClip(width=72, height=128, fps=4)
    )
    manager.start()
    try:
        jobs.append(manager.submit(RunRequest(query="a corgi learns to surf")))
        deadline = time.monotonic() + 60
        while jobs[0].state not in ("done", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        manager.stop()
    view = manager.view(manager.row(jobs[0].id))
    assert view["state"] == "cancelled" and view["error"] == "cancelled by the user"
    assert calls[0] == 1  # one denoising step of five, then the render ended
    assert "clip" not in view["stages"]
