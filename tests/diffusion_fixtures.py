"""Tiny randomly initialised diffusers pipelines, built from configs (no download).

The configs follow diffusers' own fast tests, shrunk further: every model has one
or two layers and a handful of channels, so a 2-step run takes about a second on
a CPU. Tokenizers are built in memory from a character vocabulary.

``build(name)`` returns a pipeline object; ``save(name, root)`` writes it as a
diffusers folder (``model_index.json`` + components) that our backends load
through the real ``from_pretrained(..., local_files_only=True)`` path.
``TINY_OPTIONS`` holds the per-backend options that fit each tiny pipeline.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

CHARS = sorted(set(string.ascii_lowercase + string.digits + ".,!?'-"))

#: the mimics' size: (width, height) of the default preset, ~1/15 of the real one, still
#: following each model's multiple (the fixed-size CogVideoX keeps its 3:2 landscape)
TINY_SIZES: dict[str, tuple[int, int]] = {
    "sd15": (72, 128),
    "sdxl": (72, 128),
    "flux": (32, 64),
    "ltx": (32, 64),
    "hunyuan": (16, 32),
    "cogvideox": (48, 32),
    "animatediff": (16, 32),
    "wan": (16, 32),
}

#: options every tiny run needs (2 steps, float32 on the CPU, the tiny text length);
#: sizes, frame counts, frame rates and policies are each backend's defaults
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    name: {"steps": 2, "dtype": "float32"}
    | ({} if name in ("sd15", "sdxl", "animatediff") else {"max_sequence_length": 16})
    for name in TINY_SIZES
}


def tiny_spec(name: str) -> Any:
    """The real model's spec with its sizes scaled to the mimic; every other rule (frame
    counts, frame rates, fit and duration policies, fixed sizes) is the real one."""
    import dataclasses

    from llmpopcorn.backends.diffusion.specs import SPECS

    spec = SPECS[name]
    size = TINY_SIZES[name]
    native = size if spec.fixed_size else spec.native_size
    return dataclasses.replace(spec, size_9x16=size, size_paper=size, native_size=native)


def tiny_class(name: str) -> Any:
    """The registered backend class, with the mimic's scaled spec."""
    from llmpopcorn.core.registry import registry

    cls = registry.get("image" if name in IMAGE_NAMES else "video", name)
    return type(f"Tiny{cls.__name__}", (cls,), {"spec": tiny_spec(name)})


def clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in CHARS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    vocab += [(c, -1.0) for c in CHARS]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def llama_tokenizer():
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3}
    vocab.update({c: i + 4 for i, c in enumerate(CHARS)})
    return LlamaTokenizer(vocab=vocab, merges=[], pad_token="<unk>")


def clip_text(hidden: int = 32, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=100,
        projection_dim=hidden,
        hidden_act="gelu",
        max_position_embeddings=77,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def t5_encoder(d_model: int = 32, umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    kwargs = dict(
        vocab_size=100,
        d_model=d_model,
        d_ff=37,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    if umt5:
        return UMT5EncoderModel(UMT5Config(**kwargs))
    return T5EncoderModel(T5Config(**kwargs))


def sd_vae(blocks=(4, 4, 4, 8), latent: int = 4, groups: int = 2, **kw):
    """Four blocks: the real 8x spatial factor of the SD/Flux VAEs."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=list(blocks),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(blocks),
        up_block_types=["UpDecoderBlock2D"] * len(blocks),
        latent_channels=latent,
        norm_num_groups=groups,
        layers_per_block=1,
        **kw,
    )


def build_sd15():
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
        attention_head_dim=2,
    )
    scheduler = PNDMScheduler(skip_prk_steps=True, steps_offset=1)
    return StableDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=sd_vae(),
        text_encoder=clip_text(),
        tokenizer=clip_tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        image_encoder=None,
    )


def build_sdxl():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
        norm_num_groups=2,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=sd_vae(),
        text_encoder=clip_text(),
        tokenizer=clip_tokenizer(),
        text_encoder_2=clip_text(projection=True),
        tokenizer_2=clip_tokenizer(),
        image_encoder=None,
        feature_extractor=None,
    )


def build_flux():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels packed 2x2, as in FLUX.1
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    vae = sd_vae(
        latent=16,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=clip_text(),
        tokenizer=clip_tokenizer(),
        text_encoder_2=t5_encoder(),
        tokenizer_2=t5_tokenizer(),
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )


def build_ltx(pipeline_class: str = "LTXPipeline"):
    import diffusers
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXVideoTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=32,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),  # with patch 4: 32x / 8x, as LTX
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    cls = getattr(diffusers, pipeline_class)
    return cls(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=t5_encoder(),
        tokenizer=t5_tokenizer(),
        transformer=transformer,
    )


def build_hunyuan():
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=2,  # HunyuanVideo's: 2x2 spatial patches, 1 frame
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
    )
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        act_fn="silu",
        norm_num_groups=4,
        scaling_factor=0.476986,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )
    llama = LlamaModel(
        LlamaConfig(
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            hidden_size=16,
            intermediate_size=37,
            num_attention_heads=4,
            num_key_value_heads=4,
            num_hidden_layers=2,
            vocab_size=100,
            hidden_act="gelu",
        )
    )
    return HunyuanVideoPipeline(
        text_encoder=llama,
        tokenizer=llama_tokenizer(),
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=clip_text(hidden=8),
        tokenizer_2=clip_tokenizer(),
    )


def cogvideox_transformer_config(in_channels: int) -> dict[str, Any]:
    """CogVideoX-5B's structure, shrunk: rotary embeddings, patch 2, and a sample size of
    the native size / the VAE's 8x (720x480 -> 90x60 latents; here 48x32 -> 6x4) with
    the real 49 frames."""
    width, height = TINY_SIZES["cogvideox"]
    return dict(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=in_channels,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=1,
        sample_width=width // 8,
        sample_height=height // 8,
        sample_frames=49,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=16,
        use_rotary_positional_embeddings=True,
    )


def build_cogvideox():
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(**cogvideox_transformer_config(in_channels=4))
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    return CogVideoXPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=t5_encoder(),
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(),
    )


def _animatediff_parts() -> dict[str, Any]:
    from diffusers import EulerDiscreteScheduler, MotionAdapter, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
        attention_head_dim=4,
    )
    adapter = MotionAdapter(
        block_out_channels=(8, 16),
        motion_layers_per_block=1,
        motion_norm_num_groups=2,
        motion_num_attention_heads=4,
        motion_max_seq_length=32,  # AnimateDiff's: a table of 32 positions, trained on 16
    )
    return {
        "vae": sd_vae(blocks=(8, 8, 8, 16)),
        "text_encoder": clip_text(),
        "tokenizer": clip_tokenizer(),
        "unet": unet,
        "motion_adapter": adapter,
        "scheduler": EulerDiscreteScheduler(timestep_spacing="trailing", beta_schedule="linear"),
    }


def build_animatediff():
    from diffusers import AnimateDiffPipeline

    return AnimateDiffPipeline(**_animatediff_parts())


def save_animatediff_base_and_adapter(root: Path) -> tuple[Path, Path]:
    """The real-world AnimateDiff layout: a Stable Diffusion 1.5-style base pipeline folder
    and a separate motion adapter (as AnimateDiff-Lightning ships it)."""
    from diffusers import StableDiffusionPipeline

    base, adapter_dir = Path(root) / "ad-base", Path(root) / "ad-adapter"
    if not (base / "model_index.json").exists():
        parts = _animatediff_parts()
        parts.pop("motion_adapter").save_pretrained(str(adapter_dir))
        pipe = StableDiffusionPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
        pipe.save_pretrained(str(base))
    return base, adapter_dir


def build_wan():
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    return WanPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=t5_encoder(umt5=True),
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=transformer,
    )


def build_cogvideox_i2v():
    """CogVideoX image-to-video: its own weights (the transformer also reads the image
    latents, so it has twice the input channels)."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        **cogvideox_transformer_config(in_channels=8),
        # CogVideoX-5b-I2V: a learned table for exactly 720x480 x 49 frames (here scaled)
        use_learned_positional_embeddings=True,
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    return CogVideoXImageToVideoPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=t5_encoder(),
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(),
    )


def build_wan_i2v():
    """Wan 2.1 image-to-video: a CLIP image encoder and a transformer with image inputs."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=36,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=4,
    )
    encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=4,
            projection_dim=4,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            intermediate_size=16,
            patch_size=1,
        )
    )
    processor = CLIPImageProcessor(crop_size=32, size=32)
    return WanImageToVideoPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=t5_encoder(umt5=True),
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=transformer,
        image_encoder=encoder,
        image_processor=processor,
    )


BUILDERS: dict[str, Callable[[], Any]] = {
    "sd15": build_sd15,
    "sdxl": build_sdxl,
    "flux": build_flux,
    "ltx": build_ltx,
    "hunyuan": build_hunyuan,
    "cogvideox": build_cogvideox,
    "animatediff": build_animatediff,
    "wan": build_wan,
    "cogvideox-i2v": build_cogvideox_i2v,
    "wan-i2v": build_wan_i2v,
}


def build(name: str) -> Any:
    return BUILDERS[name]()


def save(name: str, root: Path) -> Path:
    """Build the tiny pipeline for backend ``name`` and save it under ``root/name``."""
    path = Path(root) / name
    if not (path / "model_index.json").exists():
        build(name).save_pretrained(str(path), safe_serialization=True)
    return path


# -- pytest fixtures (import them into a test module to use them) -----------------------

IMAGE_NAMES = ("sd15", "sdxl", "flux")
VIDEO_NAMES = ("ltx", "hunyuan", "cogvideox", "animatediff", "wan")


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Tiny models run on one torch thread (restored after the test): on a busy 2-core
    machine, OpenMP threads spinning on microsecond-sized ops made a 2-step SD run take
    12 s instead of 0.2 s. Autouse in every module that imports it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Callable[[str], Path]:
    """``tiny_models(name)`` -> a saved tiny pipeline folder, built once per session."""
    root = tmp_path_factory.mktemp("tiny-diffusers")

    def get(name: str) -> Path:
        return save(name, root)

    return get


def tiny_options(name: str, path: Path, **overrides: Any) -> dict[str, Any]:
    return {**TINY_OPTIONS[name], "model": str(path), **overrides}


@pytest.fixture(scope="session")
def tiny_backends(tiny_models) -> Callable[..., Any]:
    """``tiny_backends(name, **options)`` -> a ready backend on the CPU (cached per options):
    the mimic's weights, the backend's default preset (scaled sizes, real frame rules)."""
    from llmpopcorn.backends.diffusion.options import resolve_options

    cache: dict[tuple, Any] = {}

    def get(name: str, *, from_cover: bool = False, **overrides: Any) -> Any:
        key = (name, from_cover, tuple(sorted(overrides.items())))
        if key not in cache:
            cls = tiny_class(name)
            i2v = f"{name}-i2v"
            if from_cover and i2v in BUILDERS and "i2v_model" not in overrides:
                overrides = {**overrides, "i2v_model": str(tiny_models(i2v))}
            raw = tiny_options(name, tiny_models(name), **overrides)
            opts = resolve_options(cls.spec, raw, device="cpu", from_cover=from_cover)
            cache[key] = cls.prepare(opts)
        return cache[key]

    return get
