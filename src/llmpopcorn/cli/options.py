"""Click options generated from :class:`~llmpopcorn.core.settings.Settings`.

Every option that sets a setting is built from the field's declaration (its help, flag,
group, default, the choices of a ``Literal``, the registry names it lists and its
environment variable), so ``--help``, the defaults and the choices cannot drift from the
settings. Commands take whole groups (``llm_options``, ``pe_options``, ...) or single
fields (:func:`setting_option`).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click

from llmpopcorn.core.settings import ENV_ALIASES, ENV_PREFIX, Settings

_ENV_OF = {field: env for env, field in ENV_ALIASES.items()}


def _cli(name: str) -> dict[str, Any]:
    extra = Settings.model_fields[name].json_schema_extra
    return dict(extra.get("cli", {})) if isinstance(extra, dict) else {}


def _base_type(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _none_if_empty(_ctx: click.Context, _param: click.Parameter, value: tuple) -> list | None:
    """Repeatable flags give ``()`` when absent: make that "not given" (None)."""
    return list(value) or None


def _shown_default(name: str) -> str | None:
    info = Settings.model_fields[name]
    cli = _cli(name)
    if "default_text" in cli:
        return cli["default_text"]
    if info.default_factory is not None or info.default is None:
        return None
    if isinstance(info.default, bool):
        return "on" if info.default else "off"
    return str(info.default)


def field_help(name: str) -> str:
    """The help of the setting ``name``'s flag: its description, the registry names it
    lists, its default and its environment variable."""
    info = Settings.model_fields[name]
    cli = _cli(name)
    text = (info.description or "").rstrip()
    if cli.get("names"):
        from llmpopcorn.core.registry import registry

        listed = ", ".join(registry.listed_names(cli["names"]))
        text += f" One of: {listed} (see `popcorn backends`)."
    notes = []
    default = _shown_default(name)
    if default is not None:
        notes.append(f"default {default}")
    notes.append(f"env {_ENV_OF.get(name, ENV_PREFIX + name.upper())}")
    return f"{text} [{', '.join(notes)}]"


def setting_option(name: str, flag: str | None = None) -> Callable:
    """The click option of the setting ``name`` (its declared flag unless ``flag``)."""
    info = Settings.model_fields[name]
    cli = _cli(name)
    flag = flag or cli.get("flag") or "--" + name.replace("_", "-")
    kind = _base_type(info.annotation)
    kwargs: dict[str, Any] = {"default": None, "help": field_help(name)}
    if cli.get("metavar"):
        kwargs["metavar"] = cli["metavar"]
    if typing.get_origin(kind) is Literal:
        kwargs["type"] = click.Choice([str(a) for a in typing.get_args(kind)])
    elif kind is bool:
        if "/" not in flag:
            kwargs["is_flag"] = True
    elif kind in (int, float):
        kwargs["type"] = kind
    elif kind is Path:
        path = cli.get("path")
        kwargs["type"] = click.Path(file_okay=path != "dir", dir_okay=path != "file")
    elif typing.get_origin(kind) is dict or kind is dict:
        kwargs.update(multiple=True, callback=_none_if_empty)
    return click.option(flag, name, **kwargs)


def choices(name: str) -> list[str]:
    """The values a ``Literal`` setting allows (for options that take several)."""
    return [str(a) for a in typing.get_args(_base_type(Settings.model_fields[name].annotation))]


def group_fields(group: str) -> list[str]:
    """The settings of a flag group, in declaration order."""
    return [name for name in Settings.model_fields if _cli(name).get("group") == group]


def options_for(*groups: str, exclude: tuple[str, ...] = ()) -> Callable:
    """A decorator adding the options of every setting in ``groups`` (but ``exclude``,
    setting names); the group ``common`` brings ``--config`` too."""

    def deco(func: Callable) -> Callable:
        names = [n for g in groups for n in group_fields(g) if n not in exclude]
        for name in reversed(names):
            func = setting_option(name)(func)
        return _config_option(func) if "common" in groups else func

    return deco


_config_option = click.option(
    "--config",
    "_config",
    default=None,
    type=click.Path(dir_okay=False),
    help="TOML config file (else $POPCORN_CONFIG, else ~/.config/llmpopcorn/config.toml).",
)


common_options = options_for("common")
package_options = options_for("package")
llm_options = options_for("llm")
pe_options = options_for("pe")
render_options = options_for("render")


def settings_from(params: dict[str, Any], **explicit: Any) -> Settings:
    """Resolve settings from the command's parameters (unknown keys are ignored)."""
    fields = Settings.model_fields
    cli = {k: v for k, v in params.items() if k in fields}
    return Settings.resolve(cli, config_path=params.get("_config"), **explicit)


#: ``--model DIR`` of the predictor commands (eval, score)
predictor_model_option = click.option(
    "--model",
    "model_dir",
    default=None,
    type=click.Path(),
    help="Model directory [default: the shipped model, env POPCORN_PREDICTOR].",
)


def execution_options(command: Callable) -> Callable:
    """Where and how many at once: ``-k/--concurrency``, ``--render-slots``, ``--executor``
    and ``--address`` (shared by ``popcorn batch`` and ``popcorn bench``)."""
    for option in reversed(
        [
            click.option(
                "-k",
                "--concurrency",
                type=int,
                default=4,
                show_default=True,
                help="LLM calls at once (they wait on the network).",
            ),
            click.option(
                "--render-slots",
                type=int,
                default=None,
                help="Renders at once [default: one per GPU, else 1].",
            ),
            click.option(
                "--executor",
                type=click.Choice(["local", "ray"]),
                default="local",
                show_default=True,
                help="local: threads in this process; ray: Ray actors "
                "(pip install 'llmpopcorn[ray]').",
            ),
            click.option(
                "--address",
                default=None,
                help="Ray cluster: auto, or ray://HOST:10001 [default: start a local Ray].",
            ),
        ]
    ):
        command = option(command)
    return command
