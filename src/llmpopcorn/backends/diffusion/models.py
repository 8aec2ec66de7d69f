"""The registered diffusers backends: one class per model spec, made from the spec.

There is no per-model code and no per-model table here: every :data:`SPECS` entry
becomes a backend class (named by :func:`backend_class_name`) and a registry entry
(:func:`llmpopcorn.backends.diffusion.specs.registry_entries`), so adding a model is
adding its :class:`~llmpopcorn.backends.diffusion.specs.ModelSpec`.
"""

from __future__ import annotations

from llmpopcorn.backends.diffusion.base import DiffusionImage, DiffusionVideo
from llmpopcorn.backends.diffusion.specs import SPECS, backend_class_name


def _describe(name: str) -> str:
    spec = SPECS[name]
    w, h = spec.size_9x16
    if spec.kind == "image":
        return f"{spec.title} via diffusers, {w}x{h} cover, {spec.steps} steps (GPU, [gpu] extra)"
    return (
        f"{spec.title} via diffusers, {w}x{h} at {spec.fps:g} fps, {spec.steps} steps "
        "(GPU, [gpu] extra)"
    )


def _backend_class(name: str) -> type:
    spec = SPECS[name]
    base = DiffusionImage if spec.kind == "image" else DiffusionVideo
    attrs = {
        "name": name,
        "spec": spec,
        "description": _describe(name),
        "__module__": __name__,
        "__doc__": f"{spec.title} ({spec.model_id}) through diffusers.",
    }
    return type(backend_class_name(name), (base,), attrs)


for _name in SPECS:
    globals()[backend_class_name(_name)] = _backend_class(_name)
