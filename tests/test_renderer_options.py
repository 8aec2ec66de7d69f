"""Issue 22, reproduction 13: every renderer declares its options (types, ranges); an
unknown or out-of-range one is an error naming the valid ones, never stored and ignored."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from llmpopcorn.backends.options import RendererOptions, known_options
from llmpopcorn.core.errors import ConfigError
from llmpopcorn.core.registry import registry
from llmpopcorn.core.settings import Settings


def test_cli_make_refuses_unknown_and_out_of_range_draft_options(tmp_path):
    from llmpopcorn.cli import main

    args = ["make", "a corgi", "--out", str(tmp_path), "--no-score"]
    result = CliRunner().invoke(main, [*args, "--image-opt", "width=-5", "--image-opt", "bogus=1"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output
    assert "unknown option 'bogus'" in result.output and "option 'width'" in result.output
    assert "hint:" in result.output and "width (int 64..4096)" in result.output
    assert not list(tmp_path.rglob("cover.png"))  # refused before anything was rendered


@pytest.mark.parametrize(
    "kind, options, words",
    [
        ("image", {"width": "-5"}, "option 'width'"),
        ("image", {"steps": "4"}, "unknown option 'steps'"),
        ("video", {"width": "541"}, "multiple of 2"),
        ("video", {"fps": "0"}, "option 'fps'"),
    ],
)
def test_draft_options_are_validated(kind, options, words):
    settings = Settings(**{f"{kind}_options": options})
    with pytest.raises(ConfigError, match=words) as info:
        registry.create(kind, "draft", settings)
    assert "known options" in info.value.hint


def test_draft_options_are_used():
    cover = registry.create("image", "draft", Settings(image_options={"width": "360"}))
    assert (cover.width, cover.height) == (360, 1920)
    clip = registry.create("video", "draft", Settings(video_options={"fps": "12"}))
    assert clip.fps == 12 and clip.options()["fps"] == 12


def test_every_renderer_declares_its_options_and_what_a_request_may_set():
    for kind in ("image", "video"):
        for name in registry.names(kind):
            cls = registry.get(kind, name)
            model = cls.options_model
            assert model is not None and issubclass(model, RendererOptions), (kind, name)
            assert model.model_config.get("extra") == "forbid"
            assert model.request_safe <= set(model.model_fields), (kind, name)
            for server_only in ("base_url", "device", "price", "adapter", "timeout"):
                assert server_only not in model.request_safe, (kind, name, server_only)
            if "model" in model.request_safe:  # an endpoint id, checked, never a path
                assert getattr(cls, "provider", ""), (kind, name)
            text = known_options(model, f"--{kind}-opt")
            assert all(field in text for field in model.model_fields)
