"""`popcorn backends`: test-only backends are neither listed nor selectable outside the
tests; a server a backend needs is "configured" until `--check` contacts it (bounded, no
key sent), then "reachable" or "unreachable"."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from click.testing import CliRunner

from fake_openai_server import FakeOpenAIServer
from llmpopcorn.cli import main
from llmpopcorn.core.errors import UnknownBackendError
from llmpopcorn.core.registry import backend_table, registry
from llmpopcorn.core.settings import Settings


def _invoke(args, **env):
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_test_only_backends_are_hidden_and_refused_outside_tests(monkeypatch, tmp_path):
    monkeypatch.delenv("POPCORN_TEST_BACKENDS")
    names = [row["name"] for row in backend_table(Settings())["llm"]]
    assert "fake" not in names and "offline" in names
    with pytest.raises(UnknownBackendError) as err:
        registry.get("llm", "fake")
    assert "fake" not in err.value.hint and "offline" in err.value.hint
    result = CliRunner().invoke(main, ["make", "a corgi", "--llm", "fake", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown llm backend 'fake'" in result.output
    assert "fake" not in _invoke(["backends"]).output.split("image:")[0]


def test_a_local_server_is_configured_until_checked(tmp_path):
    with FakeOpenAIServer() as server:
        env = {"POPCORN_LLM": "ollama", "POPCORN_LLM_BASE_URL": server.url}
        plain = json.loads(_invoke(["backends", "--json"], **env).output)
        ollama = next(r for r in plain["llm"] if r["name"] == "ollama")
        assert ollama["status"] == "configured" and server.requests == []
        # the longest --timeout: under load the fake's answer took longer than the default
        # 2 s (this test is not about the timeout; the next ones are)
        args = ["backends", "--json", "--check", "--timeout", "30"]
        checked = json.loads(_invoke(args, **env).output)
    ollama = next(r for r in checked["llm"] if r["name"] == "ollama")
    assert ollama["status"] == "reachable" and ollama["usable"] is True
    assert [r["path"] for r in server.requests] == ["/v1/models"]
    assert "authorization" not in {k.lower() for k in server.requests[0]["headers"]}
    # the other local presets point at their default ports; remote APIs are not contacted
    deepseek = next(r for r in checked["llm"] if r["name"] == "deepseek")
    assert deepseek["status"] in ("unavailable", "configured")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_server_is_unreachable_and_not_usable():
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    result = _invoke(["backends", "--check"], POPCORN_LLM="vllm", POPCORN_LLM_BASE_URL=url)
    line = next(x for x in result.output.splitlines() if x.strip().startswith("vllm"))
    assert "UNREACHABLE" in line and "no answer from" in line
    row = next(
        r
        for r in backend_table(Settings(llm="vllm", llm_base_url=url), check=True)["llm"]
        if r["name"] == "vllm"
    )
    assert row["usable"] is False and row["status"] == "unreachable"


def test_a_server_that_never_answers_is_unreachable_within_the_timeout():
    """A socket that accepts and never replies: the probe gives up after its timeout (the
    listener is closed only after the probe returned: nothing else could end it)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold():
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    try:
        settings = Settings(llm="llamacpp", llm_base_url=url)
        rows = backend_table(settings, check=True, timeout=0.3)["llm"]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
    row = next(r for r in rows if r["name"] == "llamacpp")
    assert row["status"] == "unreachable" and "within 0.3 s" in row["reason"]


def test_transformers_without_a_model_is_not_usable():
    pytest.importorskip("transformers")
    row = next(r for r in backend_table(Settings())["llm"] if r["name"] == "transformers")
    assert row["usable"] is False and "--llm-model" in row["reason"]
    model = Settings(llm="transformers", llm_model="/models/x")
    row = next(r for r in backend_table(model)["llm"] if r["name"] == "transformers")
    assert row["usable"] is True
