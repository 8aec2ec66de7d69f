"""CLI options are generated from the settings: one declaration per option (help,
default, choices, environment variable), so --help cannot drift from the settings."""

from __future__ import annotations

import click

from llmpopcorn.cli import main
from llmpopcorn.cli.options import choices, field_help, group_fields
from llmpopcorn.core.settings import Settings

#: options whose destination is a setting's name but which mean something else there: the
#: study's judge ('judge' by default, not the shipped default model); the seed of a
#: predictor's training split and of a LoRA tuning run
OWN_OPTIONS = {
    ("bench", "predictor"),
    ("predictor train", "seed"),
    ("tune", "seed"),
}


def commands(group: click.Group = main, prefix: str = ""):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_option_that_sets_a_setting_has_the_setting_s_help():
    checked = 0
    for name, command in commands():
        for param in command.params:
            if isinstance(param, click.Option) and param.name in Settings.model_fields:
                if (name, param.name) in OWN_OPTIONS:
                    continue
                assert param.help == field_help(param.name), f"popcorn {name} {param.opts}"
                checked += 1
    assert checked > 80  # make, batch, bench, serve, mcp, prompt... all take these


def test_help_carries_the_default_the_choices_the_env_and_the_registry_names():
    text = field_help("n_refs")
    assert text.startswith(Settings.model_fields["n_refs"].description)
    assert "[default 50, env POPCORN_N_REFS]" in text
    assert "env POPCORN_DATA" in field_help("data_dir")  # the documented alias
    assert choices("mode") == ["basic", "pe"]
    llm = field_help("llm")
    assert "offline" in llm and "deepseek" in llm and "fake" not in llm  # test-only hidden
    make = main.commands["make"]
    mode = next(p for p in make.params if p.name == "mode")
    assert list(mode.type.choices) == ["basic", "pe"]


def test_every_flagged_setting_belongs_to_a_group_that_a_command_takes():
    taken = {p.name for _, c in commands() for p in c.params}
    flagged = [
        n for n, f in Settings.model_fields.items() if (f.json_schema_extra or {}).get("cli")
    ]
    assert flagged and set(flagged) <= taken, sorted(set(flagged) - taken)
    assert group_fields("pe")[0] == "mode"


def test_the_studio_s_request_fields_carry_the_settings_help():
    import pytest

    pytest.importorskip("fastapi")
    from llmpopcorn.web.requests import RunRequest

    schema = RunRequest.model_json_schema()["properties"]
    shared = [n for n in RunRequest.model_fields if n in Settings.model_fields]
    assert len(shared) > 10
    for name in shared:
        assert schema[name].get("description") == Settings.model_fields[name].description, name
