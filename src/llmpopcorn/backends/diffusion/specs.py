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
    # -- what the model was trained for, and how the output reaches 9:16 and 3.0 s --------
    native_size: tuple[int, int] | None = None  # (width, height) it was trained at
    fixed_size: bool = False  # only native_size works (or is documented to work)
    native_frames: int | None = None  # trained frame count: the default when set
    fixed_frames: bool = False  # only native_frames works (or is documented to work)
    fit: str = "crop"  # default size policy (policy.FITS)
    duration: str = "trim"  # default duration policy (policy.DURATIONS)
    why_native: str = ""  # the reason for a fixed size / frame count, for error messages
    #: per-component dtypes on CUDA when dtype=auto ("default": every other component);
    #: the denoiser runs in cuda_dtype
    component_dtypes: dict[str, str] = field(default_factory=dict)
    #: the folders from_pretrained reads (for exact `hf download --include` patterns)
    components: tuple[str, ...] = ()
    i2v_components: tuple[str, ...] = ()
    i2v_download_gb: float | None = None
    adapter_gb: float = 0.9

    def default_frames(self, fps: float) -> int:
        """The trained frame count when the model has one, else enough for 3.0 s."""
        return self.native_frames or self.frames_for(3.0, fps)

    def frames_for(self, seconds: float, fps: float) -> int:
        """Fewest frames that follow the model's rule and cover ``seconds`` at ``fps``."""
        want = max(1, round(seconds * fps))
        k = max(0, -(-(want - self.frame_offset) // self.frame_step))
        return self.frame_step * k + self.frame_offset

    def valid_frames(self, frames: int) -> bool:
        return frames >= 1 and (frames - self.frame_offset) % self.frame_step == 0

    def frame_rule(self) -> str:
        if self.fixed_frames and self.native_frames:
            return f"only {self.native_frames}"
        if self.frame_step == 1:
            return "any count"
        return f"{self.frame_step}k+{self.frame_offset}"

    def fetch_size_gb(self, from_cover: bool = False) -> float:
        if from_cover and self.i2v_model_id and self.i2v_download_gb:
            return self.i2v_download_gb
        return self.download_gb

    def include_patterns(self, from_cover: bool = False) -> list[str]:
        """The files ``from_pretrained`` reads from the model's repo, as glob patterns.

        Small folders (tokenizers, scheduler, processors) whole; model folders only
        their configs and the plain (non-variant) safetensors, sharded or not, so
        ``hf download`` skips single-file checkpoints, fp16 variants, .bin copies
        and other formats that sit beside the diffusers folders.
        """
        parts = self.i2v_components if from_cover and self.i2v_components else self.components
        out = ["model_index.json"]
        for part in parts:
            if part.startswith(("tokenizer", "scheduler", "feature_extractor", "image_processor")):
                out.append(f"{part}/*")
            else:
                out += [
                    f"{part}/*.json",
                    f"{part}/*model.safetensors",
                    f"{part}/*model-*-of-*.safetensors",
                ]
        return out


LTX_NEGATIVE = "worst quality, inconsistent motion, blurry, jittery, distorted"

SD_PARTS = ("feature_extractor", "safety_checker", "scheduler", "text_encoder", "tokenizer")
SD_PARTS += ("unet", "vae")
TWO_TEXT = ("scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
ONE_T5 = ("scheduler", "text_encoder", "tokenizer", "transformer", "vae")

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
            native_size=(512, 512),
            components=SD_PARTS,
        ),
        ModelSpec(
            name="sdxl",
            kind="image",
            title="Stable Diffusion XL 1.0",
            model_id="stabilityai/stable-diffusion-xl-base-1.0",
            pipeline="StableDiffusionXLPipeline",
            download_gb=13.9,
            denoiser_b=2.57,
            text_encoders_b=0.82,
            vae_b=0.084,
            act_gb_per_mvox=4.0,
            decode_gb_per_mvox=3.0,
            steps=30,
            guidance=5.0,
            size_9x16=(768, 1344),  # SDXL's own training bucket closest to 9:16
            size_paper=(1024, 1024),
            cuda_dtype="float16",
            native_size=(1024, 1024),
            components=(*TWO_TEXT, "unet", "vae"),
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
            native_size=(1024, 1024),
            components=(*TWO_TEXT, "transformer", "vae"),
        ),
        ModelSpec(
            name="ltx",
            kind="video",
            title="LTX-Video",
            model_id="Lightricks/LTX-Video",
            pipeline="LTXPipeline",
            download_gb=14.0,
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
            native_size=(704, 480),  # trained on many sizes (multiples of 32): 9:16 is native
            components=ONE_T5,
        ),
        ModelSpec(
            name="hunyuan",
            kind="video",
            title="HunyuanVideo",
            model_id="hunyuanvideo-community/HunyuanVideo",
            pipeline="HunyuanVideoPipeline",
            download_gb=42.0,
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
            native_size=(512, 320),  # trained on many aspect ratios: 9:16 is native
            # the model card loads the transformer in bfloat16, the rest in float16
            component_dtypes={"default": "float16", "transformer": "bfloat16"},
            components=(*TWO_TEXT, "transformer", "vae"),
        ),
        ModelSpec(
            name="cogvideox",
            kind="video",
            title="CogVideoX-5B",
            model_id="THUDM/CogVideoX-5b",
            pipeline="CogVideoXPipeline",
            download_gb=21.0,
            denoiser_b=5.57,
            text_encoders_b=4.76,
            vae_b=0.215,
            act_gb_per_mvox=0.15,
            decode_gb_per_mvox=0.3,
            steps=50,
            guidance=6.0,
            size_9x16=(720, 480),  # its only size: the 9:16 output comes from `fit`
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
            native_size=(720, 480),
            fixed_size=True,
            native_frames=49,
            fixed_frames=True,
            fit="crop",
            duration="trim",
            why_native=(
                "CogVideoX-5B is documented for 720x480 x 49 frames only, and the "
                "image-to-video model has learned positional embeddings for exactly that"
            ),
            components=ONE_T5,
            i2v_components=ONE_T5,
            i2v_download_gb=21.0,
        ),
        ModelSpec(
            name="animatediff",
            kind="video",
            title="AnimateDiff-Lightning (4 steps)",
            model_id="emilianJR/epiCRealism",
            pipeline="AnimateDiffPipeline",
            download_gb=4.3,
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
            native_size=(512, 512),
            native_frames=16,  # the motion modules are trained on 16 frames (table holds 32)
            duration="retime",  # 16 frames shown over 3.0 s (16/3 fps), none repeated
            components=(*SD_PARTS[:1], *SD_PARTS[2:]),  # no safety checker
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
            native_size=(832, 480),  # 480P; 480x832 (9:16) is one of its documented sizes
            # Wan's docs keep the VAE (and the I2V image encoder) in float32 for decoding quality
            component_dtypes={"default": "bfloat16", "vae": "float32", "image_encoder": "float32"},
            components=ONE_T5,
            i2v_components=(*ONE_T5, "image_encoder", "image_processor"),
            # transformer 16.4B in bf16 ~33 GB, UMT5-XXL ~11 GB, CLIP image encoder, VAE
            i2v_download_gb=47.0,
        ),
    ]
}


def spec(name: str) -> ModelSpec:
    return SPECS[name]


def backend_class_name(name: str) -> str:
    """The name of model ``name``'s backend class in :mod:`.models` (made from its spec)."""
    return "Diffusers_" + "".join(c if c.isalnum() else "_" for c in name)


def registry_entries() -> dict[str, dict[str, str]]:
    """kind -> model name -> registry target, for every spec: what the registry lists
    (read lazily by :mod:`llmpopcorn.core.registry`; this module is plain data)."""
    entries: dict[str, dict[str, str]] = {"image": {}, "video": {}}
    for name, model in SPECS.items():
        entries[model.kind][name] = f".diffusion.models:{backend_class_name(name)}"
    return entries
