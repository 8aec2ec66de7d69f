"""Shared test fixtures. Every test runs with a clean POPCORN_* environment and a
temporary HOME, so a developer's own config or keys never leak into a test."""

from __future__ import annotations

import os

import pytest

_PROVIDER_KEYS = ("OPENAI_API_KEY", "DEEPSEEK_API_KEY", "VLLM_API_KEY", "FAL_KEY")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    for key in list(os.environ):
        if key.startswith("POPCORN_") or key in _PROVIDER_KEYS:
            monkeypatch.delenv(key, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the scripted test backends (FakeLLM) may be chosen by name in tests only
    monkeypatch.setenv("POPCORN_TEST_BACKENDS", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield


@pytest.fixture
def out_dir(tmp_path):
    path = tmp_path / "runs"
    path.mkdir()
    return path
