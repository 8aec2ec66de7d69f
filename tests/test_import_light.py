"""Nothing heavy at import: the CLI and library load without torch & co."""

import json
import os
import subprocess
import sys

HEAVY = ("torch", "transformers", "diffusers", "sentence_transformers", "sklearn")


def test_importing_the_package_and_cli_loads_no_heavy_library():
    code = (
        "import sys, json\n"
        "import llmpopcorn, llmpopcorn.cli, llmpopcorn.pipeline.core, llmpopcorn.core.registry\n"
        "from llmpopcorn.cli.backends import backend_table\n"
        "backend_table()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_registry_lists_builtins_without_importing_them():
    from llmpopcorn.core.registry import Registry

    reg = Registry({"llm": {"broken": "llmpopcorn.does_not_exist:Nope"}})
    assert reg.names("llm") == ["broken"]  # listing does not import


def test_registry_plugins_and_unknown_names():
    import pytest

    from llmpopcorn.backends.base import LLM
    from llmpopcorn.core.errors import ConfigError, UnknownBackendError
    from llmpopcorn.core.registry import Registry

    reg = Registry({"llm": {}})

    @reg.register("llm", "echo")
    class Echo(LLM):
        name = "echo"

        def complete(self, request):
            return request.messages[-1].content

    assert reg.get("llm", "echo") is Echo
    with pytest.raises(UnknownBackendError, match="unknown llm backend 'nope'") as info:
        reg.get("llm", "nope")
    assert "echo" in info.value.hint
    with pytest.raises(ConfigError, match="unknown backend kind"):
        reg.add("sound", "x", Echo)


def test_popcorn_backends_imports_nothing_heavy(tmp_path):
    """`popcorn backends` through the CLI: checking every backend's availability reads
    the local Hugging Face cache without importing huggingface_hub's download module
    (and httpx under it), diffusers, torch or transformers."""
    heavy = (*HEAVY, "huggingface_hub.file_download", "httpx")
    code = (
        "import sys, json\n"
        "from llmpopcorn.cli import main\n"
        "main(['backends'], standalone_mode=False)\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub")}  # an empty cache
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert "ltx" in out.stdout  # the diffusion backends were listed (and checked)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
