"""Renderer options: one mechanism for every image and video backend.

Each renderer declares its options as a pydantic model with ``extra="forbid"`` (types,
ranges and descriptions in the fields): the draft renderers, the diffusers backends
(:mod:`llmpopcorn.backends.diffusion.options`) and the hosted ones. Users pass them as
``--image-opt KEY=VALUE`` / ``--video-opt KEY=VALUE`` (strings, converted by the model);
:func:`validate_options` turns a bad one into an error that names it and lists the valid
options with their types and ranges.

The model's ``request_safe`` class variable lists the options a run request from the
studio or an agent (:mod:`llmpopcorn.web.requests`) may set: creative knobs only. The
rest (model paths, URLs, devices, prices, timeouts) is server configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import UnionType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from llmpopcorn.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from llmpopcorn.core.settings import Settings


class RendererOptions(BaseModel):
    """Base of every renderer's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    #: options a studio / MCP request may set (everything else is server configuration)
    request_safe: ClassVar[frozenset[str]] = frozenset()


def selected_options(settings: Settings | None, kind: str, name: str) -> dict[str, Any]:
    """The user's options for this backend: only when it is the selected one of its kind."""
    if settings is None or getattr(settings, kind, None) != name:
        return {}
    return dict(getattr(settings, f"{kind}_options", None) or {})


def validate_options(
    model_cls: type[BaseModel], raw: Mapping[str, Any] | None, *, kind: str, name: str
) -> Any:
    """``raw`` checked against ``model_cls``; an unknown or out-of-range option is a
    :class:`ConfigError` naming it, with the valid options (types and ranges) as hint."""
    try:
        return model_cls(**dict(raw or {}))
    except ValidationError as exc:
        raise ConfigError(
            f"{kind} backend '{name}': {describe_errors(exc)}",
            known_options(model_cls, f"--{kind}-opt"),
        ) from None


def describe_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown option '{key}'")
        else:
            parts.append(f"option '{key}': {err['msg']} (got {_shown(err.get('input'))})")
    return "; ".join(parts)


def known_options(model_cls: type[BaseModel], flag: str) -> str:
    """``known options (--image-opt KEY=VALUE): width (int 64..4096), ...``."""
    items = [f"{name} ({option_type(field)})" for name, field in model_cls.model_fields.items()]
    return f"known options ({flag} KEY=VALUE): " + ", ".join(items)


def option_type(field: Any) -> str:
    """A field's type and range in a few characters: ``int 64..4096``, ``9:16|paper``."""
    annotation = field.annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        annotation = args[0]  # X | None: None is the default, not a value to pass
    if get_origin(annotation) is Literal:
        return "|".join(str(v) for v in get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    low = high = ""
    for rule in field.metadata:
        for name, mark in (("ge", ""), ("gt", ">")):
            if getattr(rule, name, None) is not None:
                low = f"{mark}{getattr(rule, name):g}"
        for name, mark in (("le", ""), ("lt", "<")):
            if getattr(rule, name, None) is not None:
                high = f"{mark}{getattr(rule, name):g}"
    return f"{text} {low}..{high}" if low or high else text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
