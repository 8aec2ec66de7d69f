"""Diffusers backends without running a model: option validation, the memory planner on
fake device sizes, weight lookup (local only) and `popcorn backends` availability."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmpopcorn.backends.diffusion import memory
from llmpopcorn.backends.diffusion.options import resolve_device, resolve_options
from llmpopcorn.backends.diffusion.specs import SPECS
from llmpopcorn.backends.diffusion.weights import (
    WeightsMissingError,
    find,
    locate,
    measured_sizes,
    split_hub_ref,
)
from llmpopcorn.core.errors import ConfigError
from llmpopcorn.core.settings import Settings

try:  # the session fixture shared with the render tests (it needs torch)
    from diffusion_fixtures import tiny_models
except ImportError:  # without torch only the tests that build a tiny pipeline are skipped

    @pytest.fixture
    def tiny_models():
        pytest.skip("needs torch and diffusers (the [gpu] extra)")


@pytest.fixture(autouse=True)
def _quantization_packages(monkeypatch):
    """Pretend bitsandbytes/torchao are installed: the GPU-side options are under test."""
    import importlib.util

    real = importlib.util.find_spec
    fake = {"bitsandbytes", "torchao"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n in fake else real(n, *a)
    )


def no_cuda() -> bool:
    return False


def has_cuda() -> bool:
    return True


def cpu(name, raw=None, **kw):
    return resolve_options(SPECS[name], raw, device="cpu", cuda_available=no_cuda, **kw)


def gpu(name, raw=None, **kw):
    return resolve_options(SPECS[name], raw, device="cuda", cuda_available=has_cuda, **kw)


# -- options ------------------------------------------------------------------------------


def test_defaults_are_the_papers_settings_with_a_vertical_preset():
    ltx = gpu("ltx")
    assert (ltx.steps, ltx.width, ltx.height, ltx.fps, ltx.frames) == (50, 448, 800, 24.0, 73)
    assert ltx.negative_prompt == "worst quality, inconsistent motion, blurry, jittery, distorted"
    assert ltx.dtype == "bfloat16" and ltx.quantization == "none"
    paper = gpu("ltx", {"preset": "paper"})
    assert (paper.width, paper.height) == (704, 480)
    hunyuan = gpu("hunyuan", {"preset": "paper"})
    assert (hunyuan.width, hunyuan.height, hunyuan.steps) == (512, 320, 30)
    assert hunyuan.quantization == "bnb-4bit"
    cog = gpu("cogvideox")
    assert (cog.steps, cog.guidance, cog.fps) == (50, 6.0, 8.0)
    assert (cog.width, cog.height, cog.frames) == (720, 480, 49)  # its only size and count
    assert (cog.out_width, cog.out_height, cog.out_frames, cog.out_fps) == (270, 480, 24, 8.0)
    ad = gpu("animatediff")
    assert (ad.steps, ad.guidance, ad.frames) == (4, 1.0, 16)  # fault 8: trained on 16
    assert (ad.duration, ad.out_frames, ad.out_fps) == ("retime", 16, 16 / 3)
    wan = gpu("wan")
    assert (wan.fps, wan.frames) == (16.0, 49)  # 4k+1...
    assert (wan.duration, wan.out_frames) == ("trim", 48)  # ...trimmed to 48 = 3.0 s
    assert gpu("sd15").steps == 50 and gpu("flux").steps == 4


@pytest.mark.parametrize(
    ("name", "fps", "frames"),
    [
        ("ltx", 24, 73),
        ("ltx", 8, 25),
        ("hunyuan", 24, 73),
        ("wan", 16, 49),
    ],
)
def test_frame_counts_follow_each_models_rule_and_cover_3_seconds(name, fps, frames):
    spec = SPECS[name]
    assert spec.frames_for(3.0, fps) == frames
    assert spec.valid_frames(frames) and frames >= 3 * fps


@pytest.mark.parametrize(
    ("name", "raw", "match"),
    [
        ("ltx", {"stepz": 3}, "unknown option 'stepz'"),
        ("ltx", {"steps": 0}, "option 'steps'"),
        ("ltx", {"steps": "many"}, "option 'steps'"),
        ("ltx", {"offload": "gpu"}, "option 'offload'"),
        ("ltx", {"width": 500}, "width 500 is not a multiple of 32"),
        ("ltx", {"frames": 24}, r"24 frames does not follow the model's rule \(8k\+1\)"),
        ("cogvideox", {"frames": 81}, "accepted: frames=49 only"),
        ("cogvideox", {"frames": 25}, "accepted: frames=49 only"),
        ("cogvideox", {"width": 480, "height": 720}, "accepted: width=720 height=480 only"),
        ("cogvideox", {"preset": "9:16", "width": 720, "height": 720}, "accepted: width=720"),
        ("animatediff", {"frames": 40}, "more than the model handles"),
        ("animatediff", {"duration": "trim"}, "duration=trim needs at least 3.0 s"),
        ("ltx", {"fit": "stretch"}, "option 'fit'"),
        ("ltx", {"duration": "loop"}, "option 'duration'"),
        ("sd15", {"frames": 8}, "unknown option 'frames'"),
        ("ltx", {"adapter": "x/y"}, "adapter is not supported"),
        ("ltx", {"offload": "model"}, "needs? a CUDA|moves weights"),
        ("hunyuan", {"quantization": "bnb-4bit"}, "needs a CUDA device"),
        ("ltx", {"device": "tpu"}, "unknown device 'tpu'"),
    ],
)
def test_bad_options_are_refused_with_the_fix(name, raw, match):
    with pytest.raises(ConfigError, match=match) as info:
        cpu(name, raw)
    assert info.value.hint


def test_option_errors_name_the_flag_and_known_options():
    with pytest.raises(ConfigError) as info:
        cpu("ltx", {"stepz": 3})
    assert "--video-opt" in info.value.hint and "steps" in info.value.hint
    with pytest.raises(ConfigError) as info:
        cpu("ltx", {"width": 500})
    assert info.value.hint == "use --video-opt width=512"


def test_string_values_from_the_command_line_are_converted():
    opts = cpu("ltx", {"steps": "2", "vae_tiling": "true", "guidance": "1.5", "fps": "8"})
    assert opts.steps == 2 and opts.vae_tiling is True and opts.guidance == 1.5
    assert opts.frames == 25


def test_cpu_defaults_and_auto_quantization():
    hunyuan = cpu("hunyuan")
    assert hunyuan.dtype == "float32" and hunyuan.quantization == "none"
    assert resolve_device("auto", no_cuda) == "cpu" and resolve_device("auto", has_cuda) == "cuda"
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda:1", no_cuda)


def test_video_from_cover_only_where_the_model_supports_it():
    assert cpu("ltx", from_cover=True).i2v_model is None  # same weights
    assert cpu("cogvideox", from_cover=True).i2v_model == "THUDM/CogVideoX-5b-I2V"
    assert cpu("wan", from_cover=True).i2v_model.startswith("Wan-AI/Wan2.1-I2V")
    for name in ("hunyuan", "animatediff"):
        with pytest.raises(ConfigError, match="cannot start from the cover"):
            cpu(name, from_cover=True)


def test_settings_and_cli_flags_carry_backend_options():
    s = Settings.resolve(
        {"video_options": ["steps=2", "negative_prompt=blurry, dark"], "video_from_cover": True},
        env={"POPCORN_IMAGE_OPTIONS": "steps=3;width=64"},
    )
    assert s.video_options == {"steps": "2", "negative_prompt": "blurry, dark"}
    assert s.image_options == {"steps": "3", "width": "64"} and s.video_from_cover is True
    assert Settings.resolve(env={"POPCORN_VIDEO_OPTIONS": '{"fps": 8}'}).video_options == {"fps": 8}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        Settings.resolve({"image_options": ["steps"]}, env={})


# -- memory planner -------------------------------------------------------------------------


def test_planner_fits_on_a_big_gpu_and_lists_what_fits_on_a_small_one():
    opts = gpu("ltx", {"preset": "paper"})
    big = memory.DeviceMemory("cuda", total_gb=80, free_gb=79)
    assert memory.check(SPECS["ltx"], opts, big).fits
    small = memory.DeviceMemory("cuda", total_gb=12, free_gb=11.5, host_free_gb=64)
    with pytest.raises(memory.MemoryPlanError) as info:
        memory.check(SPECS["ltx"], opts, small)
    err = info.value
    assert "LTX-Video (ltx) needs about" in err.message and "11.5 GB of 12.0 GB" in err.message
    assert "--video-opt offload=model" in err.hint and " GB" in err.hint
    plan = memory.plan(SPECS["ltx"], opts, small)
    assert plan.alternatives and all(a.peak_gb <= plan.budget_gb for a in plan.alternatives)


def test_planner_options_shrink_the_estimate_in_the_expected_order():
    spec, base = SPECS["hunyuan"], gpu("hunyuan", {"quantization": "none"})
    full = memory.estimate(spec, base).peak_gb
    model = memory.estimate(spec, base.replace(offload="model")).peak_gb
    seq = memory.estimate(spec, base.replace(offload="sequential")).peak_gb
    q4 = memory.estimate(spec, base.replace(quantization="bnb-4bit")).peak_gb
    q8 = memory.estimate(spec, base.replace(quantization="bnb-8bit")).peak_gb
    assert full > q8 > q4 and full > model > seq
    fp32 = memory.estimate(spec, base.replace(dtype="float32")).peak_gb
    assert fp32 > 1.8 * full * 0.9
    assert full > 40  # 12.8B transformer + 7.6B text encoders in bf16 do not fit a 24 GB card


def test_planner_host_memory_limits_offload_alternatives():
    opts = gpu("flux")
    no_host = memory.DeviceMemory("cuda", total_gb=16, free_gb=15, host_free_gb=4)
    plan = memory.plan(SPECS["flux"], opts, no_host)
    assert all("offload" not in a.changes for a in plan.alternatives)


def test_planner_says_when_nothing_fits():
    tiny = memory.DeviceMemory("cuda", total_gb=2, free_gb=1, host_free_gb=1)
    with pytest.raises(memory.MemoryPlanError, match="needs about") as info:
        memory.check(SPECS["hunyuan"], gpu("hunyuan", {"quantization": "none"}), tiny)
    assert "nothing fits" in info.value.hint


def test_memory_check_can_be_skipped():
    opts = gpu("ltx", {"memory_check": "false"})
    assert opts.memory_check is False


# -- weights ----------------------------------------------------------------------------------


def test_hub_references_and_paths_are_told_apart():
    assert split_hub_ref("Lightricks/LTX-Video") == ("Lightricks/LTX-Video", None)
    assert split_hub_ref("ByteDance/AnimateDiff-Lightning/x.safetensors") == (
        "ByteDance/AnimateDiff-Lightning",
        "x.safetensors",
    )
    assert split_hub_ref("/models/ltx") is None and split_hub_ref("./ltx") is None


def test_missing_weights_name_the_model_size_and_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert find("Lightricks/LTX-Video") is None
    with pytest.raises(WeightsMissingError) as info:
        locate("Lightricks/LTX-Video", SPECS["ltx"])
    assert "'Lightricks/LTX-Video'" in info.value.message
    assert "`hf download Lightricks/LTX-Video --include model_index.json" in info.value.hint
    assert "-of-*.safetensors'` (about 14 GB)" in info.value.hint
    with pytest.raises(WeightsMissingError, match="local path does not exist"):
        locate(str(tmp_path / "nowhere"), SPECS["ltx"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsMissingError, match="no model_index.json"):
        locate(str(tmp_path / "empty"), SPECS["ltx"])


def test_weights_in_the_local_hf_cache_are_found(tmp_path, monkeypatch):
    # the hub cache layout, written by hand: models--owner--name/{refs/main,snapshots/<rev>/}
    cache = tmp_path / "hub"
    repo = cache / "models--owner--tiny"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    assert find("owner/tiny") == snap


def test_sizes_are_read_from_safetensors_headers(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    (tmp_path / "transformer").mkdir()
    (tmp_path / "vae").mkdir()
    save_file({"w": np.zeros((100, 10), np.float32)}, tmp_path / "transformer" / "m.safetensors")
    save_file({"w": np.zeros((5,), np.float32)}, tmp_path / "vae" / "m.safetensors")
    sizes = measured_sizes(tmp_path, SPECS["ltx"])
    assert sizes.denoiser_b == pytest.approx(1000 / 1e9) and sizes.vae_b == pytest.approx(5e-9)
    assert sizes.text_encoders_b == SPECS["ltx"].text_encoders_b  # not on disk: the spec's


# -- availability and light imports --------------------------------------------------------


def test_backends_table_reports_missing_weights_without_loading(tmp_path, monkeypatch):
    from llmpopcorn.cli.backends import backend_table

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    table = backend_table(Settings.resolve(env={}))
    rows = {row["name"]: row for row in table["video"] + table["image"]}
    for name in SPECS:
        assert rows[name]["usable"] is False
        assert f"hf download {SPECS[name].model_id}" in rows[name]["reason"]
    folder = tmp_path / "ltx"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    settings = Settings.resolve(env={}, video="ltx", video_options={"model": str(folder)})
    row = {r["name"]: r for r in backend_table(settings)["video"]}["ltx"]
    assert row["usable"] is True and str(folder) in row["reason"]


def test_importing_and_listing_diffusion_backends_loads_no_torch():
    code = (
        "import sys, json\n"
        "from llmpopcorn.core.registry import registry\n"
        "for kind in ('image', 'video'):\n"
        "    for name in registry.names(kind):\n"
        "        registry.get(kind, name).availability(None)\n"
        "heavy = ('torch', 'diffusers', 'transformers')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_missing_gpu_extra_names_the_extra(monkeypatch):
    import importlib.util

    from llmpopcorn.core.errors import MissingExtraError
    from llmpopcorn.core.registry import registry

    LTXVideo = registry.get("video", "ltx")

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "diffusers" else real(n, *a)
    )
    avail = LTXVideo.availability(None)
    assert not avail.ok and "llmpopcorn[gpu]" in avail.reason
    with pytest.raises(MissingExtraError, match="diffusers") as info:
        LTXVideo.from_settings(Settings.resolve(env={}, video="ltx"))
    assert "llmpopcorn[gpu]" in info.value.hint


# -- issue 13: what each model accepts, and the faults found against diffusers 0.42 -----------


def test_fault1_cogvideox_i2v_size_is_refused_at_validation_with_the_accepted_values():
    """Before: the 9:16 default (480x720) reached the pipeline and crashed on the learned
    positional embeddings after a ~22 GB load. Now the default is the native size and
    anything else fails here, before loading, listing what is accepted."""
    opts = gpu("cogvideox", from_cover=True)
    assert (opts.width, opts.height, opts.frames) == (720, 480, 49)
    with pytest.raises(ConfigError) as info:
        gpu("cogvideox", {"width": 480, "height": 720}, from_cover=True)
    assert "accepted: width=720 height=480 only" in info.value.message
    assert "learned positional embeddings" in info.value.message
    assert "fit=crop" in info.value.hint and "fit=letterbox" in info.value.hint


def test_fault5_cogvideox_generates_its_trained_49_frames_and_trims_to_3_seconds():
    for from_cover in (False, True):
        opts = gpu("cogvideox", from_cover=from_cover)
        assert opts.frames == 49 and (opts.out_frames, opts.out_fps) == (24, 8.0)
    fast = gpu("cogvideox", {"duration": "resample"})
    assert (fast.frames, fast.out_frames, fast.out_fps) == (49, 24, 8.0)


def test_fit_and_duration_policies_are_resolved_and_recorded():
    box = gpu("cogvideox", {"fit": "letterbox"})
    assert (box.out_width, box.out_height) == (720, 1280)
    record = box.record()
    assert record["fit"] == "letterbox" and record["duration"] == "trim"
    assert record["out_frames"] == 24 and record["width"] == 720
    ltx = gpu("ltx")
    assert (ltx.out_width, ltx.out_height, ltx.out_frames) == (448, 796, 72)


def test_policy_functions_give_exact_sizes_and_3_seconds():
    import numpy as np

    from llmpopcorn.backends.diffusion import policy

    frame = np.arange(480 * 720 * 3, dtype=np.uint32).reshape(480, 720, 3).astype(np.uint8)
    crop = policy.fit_frame(frame, "crop")
    assert crop.shape == (480, 270, 3) and np.array_equal(crop, frame[:, 225:495])
    box = policy.fit_frame(frame, "letterbox")
    assert box.shape == (1280, 720, 3) and np.array_equal(box[400:880], frame)
    assert box[:400].max() == 0 and box[880:].max() == 0
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(49)]
    trimmed, fps = policy.fit_duration(frames, 8.0, "trim")
    assert len(trimmed) == 24 and fps == 8.0 and trimmed[-1][0, 0, 0] == 23
    resampled, fps = policy.fit_duration(frames, 8.0, "resample")
    assert len(resampled) == 24 and resampled[-1][0, 0, 0] == 48 and fps == 8.0
    retimed, fps = policy.fit_duration(frames[:16], 8.0, "retime")
    assert len(retimed) == 16 and fps * 3.0 == pytest.approx(16)
    with pytest.raises(ValueError, match="shorter than 3.0 s"):
        policy.fit_duration(frames[:16], 8.0, "trim")


def test_cover_is_pillarboxed_into_a_landscape_model_frame():
    import numpy as np
    from PIL import Image

    from llmpopcorn.backends.diffusion import policy

    cover = Image.new("RGB", (90, 160), (250, 10, 10))
    frame = policy.cover_for_model(cover, 720, 480)
    assert frame.size == (720, 480)
    centre = np.asarray(frame)[:, 225:495]  # the part the crop policy keeps
    assert np.abs(centre.astype(int) - [250, 10, 10]).max() <= 2  # the whole cover, unstretched
    same = policy.cover_for_model(cover, 45, 80)  # same aspect: a plain resize
    assert same.size == (45, 80)


def test_fault2_torchao_builds_a_working_quantization_config():
    """Before: quant_backend='torchao' + {'quant_type': 'int8wo'} raised ValueError in
    PipelineQuantizationConfig (diffusers 0.42). Now: diffusers' TorchAoConfig with an
    AOBaseConfig instance, in a quant_mapping for the denoiser only."""
    pytest.importorskip("diffusers")
    pytest.importorskip("torchao")
    import diffusers

    from llmpopcorn.backends.diffusion.base import quantization_config

    config = quantization_config("torchao-int8", "bfloat16", {"transformer": [], "vae": []})
    assert isinstance(config, diffusers.PipelineQuantizationConfig)
    mapped = config.quant_mapping["transformer"]
    assert isinstance(mapped, diffusers.TorchAoConfig) and "vae" not in config.quant_mapping
    assert type(mapped.quant_type).__name__ == "Int8WeightOnlyConfig"


def test_fault3_4bit_with_sequential_offload_is_refused_and_never_suggested():
    with pytest.raises(ConfigError, match="does not work") as info:
        gpu("hunyuan", {"offload": "sequential"})  # auto -> bnb-4bit on CUDA
    assert "offload=model" in info.value.hint and "quantization=none" in info.value.hint
    with pytest.raises(ConfigError, match="bitsandbytes"):
        gpu("ltx", {"quantization": "bnb-8bit", "offload": "sequential"})
    ok = gpu("hunyuan", {"offload": "model"})
    assert ok.quantization == "bnb-4bit"
    for free in (4, 8, 12, 20, 40):
        small = memory.DeviceMemory("cuda", total_gb=free + 1, free_gb=free, host_free_gb=256)
        for name in ("hunyuan", "flux", "wan", "cogvideox"):
            for start in ({}, {"quantization": "none"}):
                opts = gpu(name, start)
                for alt in memory.plan(SPECS[name], opts, small).alternatives:
                    changed = opts.replace(**alt.changes)
                    assert not (
                        changed.quantization.startswith("bnb") and changed.offload == "sequential"
                    ), (name, alt.changes)
                    # every suggestion passes option validation as the user would type it
                    raw = {k: v for k, v in start.items()}
                    raw.update({k: str(v).lower() for k, v in alt.changes.items()})
                    gpu(name, raw)


def test_planner_skips_quantization_whose_package_is_missing(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a)
    )
    small = memory.DeviceMemory("cuda", total_gb=13, free_gb=12, host_free_gb=256)
    plan = memory.plan(SPECS["flux"], gpu("flux"), small)
    assert all("bnb" not in str(a.changes.get("quantization")) for a in plan.alternatives)


def test_fault4_device_scope_and_placement_check():
    """bitsandbytes puts weights on the *current* CUDA device: loading and calling run
    inside torch.cuda.device(N) for cuda:N, and a pipeline whose components are not all
    on the device is refused. The real cuda:1 run is in test_diffusion_gpu.py."""
    import contextlib

    torch = pytest.importorskip("torch")
    from llmpopcorn.backends.diffusion.base import device_scope, placement_problem

    scope = device_scope("cuda:1", torch)
    assert isinstance(scope, torch.cuda.device) and scope.idx == 1
    assert isinstance(device_scope("cpu", torch), contextlib.nullcontext)

    class Pipe:
        def __init__(self):
            self.components = {
                "transformer": torch.nn.Linear(2, 2),
                "vae": torch.nn.Linear(2, 2),
                "tokenizer": object(),
            }

    pipe = Pipe()
    assert placement_problem(pipe, "cpu", torch) is None
    pipe.components["vae"] = pipe.components["vae"].to("meta")
    assert placement_problem(pipe, "cpu", torch) == "vae on meta"


def test_fault6_bnb_4bit_computes_in_the_run_dtype():
    from llmpopcorn.backends.diffusion.base import quant_settings

    settings = quant_settings("bnb-4bit", "bfloat16")
    assert settings["bnb_4bit_compute_dtype"] == "bfloat16"
    assert settings["bnb_4bit_quant_type"] == "nf4" and settings["load_in_4bit"] is True
    assert quant_settings("bnb-4bit", "float16")["bnb_4bit_compute_dtype"] == "float16"


def test_fault7_component_dtypes_follow_the_model_docs():
    hunyuan = gpu("hunyuan")
    assert hunyuan.dtype == "bfloat16"  # the transformer
    assert hunyuan.component_dtypes == {"default": "float16", "transformer": "bfloat16"}
    wan = gpu("wan", from_cover=True)
    assert wan.component_dtypes == {
        "default": "bfloat16",
        "vae": "float32",
        "image_encoder": "float32",
    }
    assert gpu("wan", {"dtype": "float16"}).component_dtypes is None  # explicit: one dtype
    assert cpu("wan").component_dtypes is None and gpu("ltx").component_dtypes is None
    # the planner counts the float32 VAE at 4 bytes a parameter
    est = memory.estimate(SPECS["wan"], wan)
    assert est.parts["vae"] == pytest.approx(SPECS["wan"].vae_b * 4)


def test_fault9_fetch_command_names_exactly_the_files_from_pretrained_reads(tmp_path):
    from llmpopcorn.backends.diffusion.weights import fetch_command

    ltx = fetch_command("Lightricks/LTX-Video", SPECS["ltx"])
    assert ltx.startswith("hf download Lightricks/LTX-Video --include model_index.json")
    assert "--include 'transformer/*model.safetensors'" in ltx
    assert "--include 'tokenizer/*'" in ltx and "safety_checker" not in ltx
    wan = fetch_command("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", SPECS["wan"], from_cover=True)
    assert "'image_encoder/*model.safetensors'" in wan and "'image_processor/*'" in wan
    with pytest.raises(WeightsMissingError) as info:
        locate("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", SPECS["wan"], from_cover=True)
    assert "(about 47 GB)" in info.value.hint  # not the 1.3B text-to-video model's 18 GB
    assert "image_encoder" in info.value.hint


def test_fault9_include_patterns_select_a_loadable_pipeline_and_skip_extras(tmp_path, tiny_models):
    """Copy only the files the patterns select from a saved (tiny) pipeline folder that
    also holds the extras real repos carry (single-file checkpoints, fp16 variants, .bin
    copies): the copy loads with from_pretrained and none of the extras came along."""
    import shutil
    from fnmatch import fnmatch

    pytest.importorskip("diffusers")
    full = tmp_path / "full"
    shutil.copytree(tiny_models("ltx"), full)
    (full / "ltx-video-2b-v0.9.safetensors").write_bytes(b"x")
    (full / "transformer" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"x")
    (full / "text_encoder" / "pytorch_model.bin").write_bytes(b"x")
    patterns = SPECS["ltx"].include_patterns()
    copy = tmp_path / "selected"
    for path in full.rglob("*"):
        rel = path.relative_to(full).as_posix()
        if path.is_file() and any(fnmatch(rel, p) for p in patterns):
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, copy / rel)
    names = {p.name for p in copy.rglob("*")}
    assert "ltx-video-2b-v0.9.safetensors" not in names and "pytorch_model.bin" not in names
    assert "diffusion_pytorch_model.fp16.safetensors" not in names
    from diffusers import LTXPipeline

    pipe = LTXPipeline.from_pretrained(str(copy), local_files_only=True)
    assert pipe.transformer is not None and pipe.tokenizer is not None
