"""The registered diffusers backends: one thin class per model spec, no per-model code."""

from __future__ import annotations

from llmpopcorn.backends.diffusion.base import DiffusionImage, DiffusionVideo
from llmpopcorn.backends.diffusion.specs import SPECS


def _describe(name: str) -> str:
    spec = SPECS[name]
    w, h = spec.size_9x16
    if spec.kind == "image":
        return f"{spec.title} via diffusers, {w}x{h} cover, {spec.steps} steps (GPU, [gpu] extra)"
    return (
        f"{spec.title} via diffusers, {w}x{h} at {spec.fps:g} fps, {spec.steps} steps "
        "(GPU, [gpu] extra)"
    )


class SD15(DiffusionImage):
    name, spec, description = "sd15", SPECS["sd15"], _describe("sd15")


class SDXL(DiffusionImage):
    name, spec, description = "sdxl", SPECS["sdxl"], _describe("sdxl")


class FluxSchnell(DiffusionImage):
    name, spec, description = "flux", SPECS["flux"], _describe("flux")


class LTXVideo(DiffusionVideo):
    name, spec, description = "ltx", SPECS["ltx"], _describe("ltx")


class HunyuanVideo(DiffusionVideo):
    name, spec, description = "hunyuan", SPECS["hunyuan"], _describe("hunyuan")


class CogVideoX(DiffusionVideo):
    name, spec, description = "cogvideox", SPECS["cogvideox"], _describe("cogvideox")


class AnimateDiff(DiffusionVideo):
    name, spec, description = "animatediff", SPECS["animatediff"], _describe("animatediff")


class Wan(DiffusionVideo):
    name, spec, description = "wan", SPECS["wan"], _describe("wan")
