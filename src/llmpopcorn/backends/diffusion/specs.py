"""Per-model facts as data: one :class:`ModelSpec` per registered diffusers backend.

Everything model-specific lives here (hub ids, pipeline classes, the paper's
settings, the 9:16 preset, frame-count rules, sizes for the memory planner), so the
backends themselves are one shared implementation. Sizes are parameter counts in
billions, taken from the published checkpoints; download sizes are approximate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["image", "video"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: Kind
    title: str
    model_id: str  # default Hugging Face repo (diffusers layout)
    pipeline: str  # diffusers class for text-to-image / text-to-video
    download_gb: float  # what `hf download` fetches (approximate)
    #: parameters (billions) of the denoiser (transformer / UNet) and of everything else
    denoiser_b: float
    text_encoders_b: float
    vae_b: float
    #: activation memory (GB, half precision) per million output pixels x frames
    act_gb_per_mvox: float
    #: the VAE decode's working memory (GB) per million output pixels x frames, untiled
    decode_gb_per_mvox: float
    steps: int
    guidance: float
    size_9x16: tuple[int, int]  # (width, height) of the vertical preset
    size_paper: tuple[int, int] | None = None
    multiple: int = 8  # width and height must be multiples of this
    negative_prompt: str | None = None
    cuda_dtype: str = "bfloat16"
    max_sequence_length: int | None = None
    # video only
    fps: float | None = None
    frame_step: int = 1  # valid frame counts are frame_step * k + frame_offset
    frame_offset: int = 0
    max_frames: int | None = None
    quantization: str = "none"  # the paper's default (HunyuanVideo: 4-bit transformer)
    i2v_pipeline: str | None = None  # image-to-video class, when the model family has one
    i2v_model_id: str | None = None  # separate image-to-video weights (None: same weights)
    i2v_denoiser_b: float | None = None  # its denoiser's size, when it differs
    adapter_id: str | None = None  # AnimateDiff motion adapter (repo or repo/file)
    scheduler: dict[str, Any] | None = None  # scheduler class + config overrides
    paper: str = ""  # the paper's settings, in words
    extra_call: dict[str, Any] = field(default_factory=dict)

    @property
    def total_b(self) -> float:
        return self.denoiser_b + self.text_encoders_b + self.vae_b

    def frames_for(self, seconds: float, fps: float) -> int:
        """Fewest frames that follow the model's rule and cover ``seconds`` at ``fps``."""
        want = max(1, round(seconds * fps))
        k = max(0, -(-(want - self.frame_offset) // self.frame_step))
        return self.frame_step * k + self.frame_offset

    def valid_frames(self, frames: int) -> bool:
        return frames >= 1 and (frames - self.frame_offset) % self.frame_step == 0

    def frame_rule(self) -> str:
        if self.frame_step == 1:
            return "any count"
        return f"{self.frame_step}k+{self.frame_offset}"


LTX_NEGATIVE = "worst quality, inconsistent motion, blurry, jittery, distorted"

SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="sd15",
            kind="image",
            title="Stable Diffusion 1.5",
            model_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
            pipeline="StableDiffusionPipeline",
            download_gb=5.5,
            denoiser_b=0.86,
            text_encoders_b=0.123,
            vae_b=0.084,
            act_gb_per_mvox=4.0,
            decode_gb_per_mvox=3.0,
            steps=50,
            guidance=7.5,
            size_9x16=(432, 768),
            size_paper=(512, 512),
            cuda_dtype="float16",
            paper="the paper's cover model (default settings, 50 steps)",
        ),
        ModelSpec(
            name="sdxl",
            kind="image",
            title="Stable Diffusion XL 1.0",
            model_id="stabilityai/stable-diffusion-xl-base-1.0",
            pipeline="StableDiffusionXLPipeline",
            download_gb=7.0,
            denoiser_b=2.57,
            text_encoders_b=0.82,
            vae_b=0.084,
            act_gb_per_mvox=4.0,
            decode_gb_per_mvox=3.0,
            steps=30,
            guidance=5.0,
            size_9x16=(576, 1024),
            size_paper=(1024, 1024),
            cuda_dtype="float16",
        ),
        ModelSpec(
            name="flux",
            kind="image",
            title="FLUX.1-schnell",
            model_id="black-forest-labs/FLUX.1-schnell",
            pipeline="FluxPipeline",
            download_gb=34.0,
            denoiser_b=11.9,
            text_encoders_b=4.88,
            vae_b=0.084,
            act_gb_per_mvox=4.0,
            decode_gb_per_mvox=3.0,
            steps=4,
            guidance=0.0,
            size_9x16=(576, 1024),
            size_paper=(1024, 1024),
            multiple=16,
            max_sequence_length=256,
        ),
        ModelSpec(
            name="ltx",
            kind="video",
            title="LTX-Video",
            model_id="Lightricks/LTX-Video",
            pipeline="LTXPipeline",
            download_gb=15.0,
            denoiser_b=1.92,
            text_encoders_b=4.76,
            vae_b=0.42,
            act_gb_per_mvox=0.1,
            decode_gb_per_mvox=0.15,
            steps=50,
            guidance=3.0,
            size_9x16=(448, 800),
            size_paper=(704, 480),
            multiple=32,
            negative_prompt=LTX_NEGATIVE,
            max_sequence_length=128,
            fps=24,
            frame_step=8,
            frame_offset=1,
            max_frames=257,
            i2v_pipeline="LTXImageToVideoPipeline",
            paper="704x480, 50 steps, negative prompt '" + LTX_NEGATIVE + "'",
        ),
        ModelSpec(
            name="hunyuan",
            kind="video",
            title="HunyuanVideo",
            model_id="hunyuanvideo-community/HunyuanVideo",
            pipeline="HunyuanVideoPipeline",
            download_gb=40.0,
            denoiser_b=12.8,
            text_encoders_b=7.6,
            vae_b=0.25,
            act_gb_per_mvox=0.17,
            decode_gb_per_mvox=0.5,
            steps=30,
            guidance=6.0,
            size_9x16=(288, 512),
            size_paper=(512, 320),
            multiple=16,
            fps=24,
            frame_step=4,
            frame_offset=1,
            max_frames=129,
            quantization="bnb-4bit",
            max_sequence_length=256,
            paper="512x320, 30 steps, transformer quantised to 4 bits",
        ),
        ModelSpec(
            name="cogvideox",
            kind="video",
            title="CogVideoX-5B",
            model_id="THUDM/CogVideoX-5b",
            pipeline="CogVideoXPipeline",
            download_gb=22.0,
            denoiser_b=5.57,
            text_encoders_b=4.76,
            vae_b=0.215,
            act_gb_per_mvox=0.15,
            decode_gb_per_mvox=0.3,
            steps=50,
            guidance=6.0,
            size_9x16=(480, 720),
            size_paper=(720, 480),
            multiple=16,
            fps=8,
            frame_step=8,
            frame_offset=1,
            max_frames=49,
            max_sequence_length=226,
            i2v_pipeline="CogVideoXImageToVideoPipeline",
            i2v_model_id="THUDM/CogVideoX-5b-I2V",
            paper="5B model, 50 steps, guidance 6, 8 fps",
        ),
        ModelSpec(
            name="animatediff",
            kind="video",
            title="AnimateDiff-Lightning (4 steps)",
            model_id="emilianJR/epiCRealism",
            pipeline="AnimateDiffPipeline",
            download_gb=6.0,
            denoiser_b=1.31,
            text_encoders_b=0.123,
            vae_b=0.084,
            act_gb_per_mvox=1.0,
            decode_gb_per_mvox=0.5,
            steps=4,
            guidance=1.0,
            size_9x16=(360, 640),
            size_paper=(512, 512),
            cuda_dtype="float16",
            fps=8,
            max_frames=32,
            adapter_id="ByteDance/AnimateDiff-Lightning/animatediff_lightning_4step_diffusers.safetensors",
            scheduler={
                "class": "EulerDiscreteScheduler",
                "timestep_spacing": "trailing",
                "beta_schedule": "linear",
            },
            paper="AnimateDiff-Lightning, 4 steps, guidance 1.0",
        ),
        ModelSpec(
            name="wan",
            kind="video",
            title="Wan 2.1 T2V 1.3B",
            model_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            pipeline="WanPipeline",
            download_gb=18.0,
            denoiser_b=1.42,
            text_encoders_b=5.68,
            vae_b=0.127,
            act_gb_per_mvox=0.1,
            decode_gb_per_mvox=0.15,
            steps=30,
            guidance=5.0,
            size_9x16=(480, 832),
            size_paper=(832, 480),
            multiple=16,
            fps=16,
            frame_step=4,
            frame_offset=1,
            max_frames=81,
            max_sequence_length=512,
            i2v_pipeline="WanImageToVideoPipeline",
            i2v_model_id="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
            i2v_denoiser_b=16.4,
            paper="not in the paper: the lightest modern text-to-video model",
        ),
    ]
}


def spec(name: str) -> ModelSpec:
    return SPECS[name]
