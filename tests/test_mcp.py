"""``popcorn mcp`` over stdio, driven by the official SDK's own client in a subprocess."""

from __future__ import annotations

import json
import os
import sys

import pytest

pytest.importorskip("mcp")
anyio = pytest.importorskip("anyio")
from mcp import StdioServerParameters  # noqa: E402
from mcp.client import Client  # noqa: E402

from fakes import TitleLengthScorer, draft_pipeline  # noqa: E402
from llmpopcorn.core.settings import Settings  # noqa: E402
from llmpopcorn.mcp.server import build_server  # noqa: E402
from pe_fixtures import write_corpus  # noqa: E402

TOOLS = {"make_run", "score_idea", "build_pe_prompt", "list_runs", "get_run"}


def _data(result) -> dict:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        data = result.structured_content
        return data.get("result", data) if set(data) == {"result"} else data
    return json.loads(result.content[0].text)


def test_mcp_tools_over_stdio(out_dir, tmp_path):
    cli = ["-c", "from llmpopcorn.cli import main; main()", "mcp", "--out", str(out_dir)]
    params = StdioServerParameters(
        command=sys.executable,
        args=cli,
        env={
            "POPCORN_SCORE": "0",
            "HOME": os.environ["HOME"],
            "PYTHONPATH": os.pathsep.join(sys.path),
        },
    )

    async def session():
        async with Client(params, read_timeout_seconds=120) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert TOOLS <= names
            made = _data(
                await client.call_tool("make_run", {"query": "a corgi learns to surf", "seed": 3})
            )
            assert made["state"] == "done", made
            assert "corgi" in made["idea"]["title"].lower()
            assert os.path.isfile(made["files"]["clip"])
            listed = _data(await client.call_tool("list_runs", {"search": "corgi"}))
            assert listed["total"] == 1 and listed["runs"][0]["id"] == made["id"]
            fetched = _data(await client.call_tool("get_run", {"run_id": made["id"]}))
            assert fetched["idea"] == made["idea"]
            missing = await client.call_tool("get_run", {"run_id": "nope"})
            assert missing.is_error and "list_runs" in missing.content[0].text
            empty = await client.call_tool("make_run", {"query": "   "})
            assert empty.is_error and "hint" in empty.content[0].text

    anyio.run(session)


def test_score_idea_in_process_with_a_fake_scorer(out_dir):
    scorer = TitleLengthScorer()
    server = build_server(
        Settings.resolve(env={}, out_dir=out_dir),
        pipeline_factory=lambda s: draft_pipeline(s, scorer=scorer),
    )

    async def session():
        async with Client(server) as client:
            score = _data(await client.call_tool("score_idea", {"title": "Twelve chars"}))
            assert score["log2_comments"] == pytest.approx(1.2)
            assert score["predictor"] == "title-length"
            empty = await client.call_tool("score_idea", {"title": ""})
            assert empty.is_error

    anyio.run(session)
    server.jobs.stop()


@pytest.mark.slow  # the first PE prompt imports scikit-learn and builds an index: 14-37 s here
def test_build_pe_prompt_in_process(out_dir, tmp_path):
    data = write_corpus(tmp_path / "data")
    settings = Settings.resolve(
        env={}, out_dir=out_dir, data_dir=data, embedder="tfidf", cache_dir=tmp_path / "cache"
    )
    server = build_server(settings)

    async def session():
        async with Client(server) as client:
            prompt = _data(
                await client.call_tool(
                    "build_pe_prompt", {"query": "a game boss fight", "n_refs": 10}
                )
            )
            assert len(prompt["references"]) == 10
            assert "a game boss fight" in prompt["messages"][-1]["content"]
            bad = await client.call_tool("build_pe_prompt", {"query": "q", "n_refs": 0})
            assert bad.is_error

    anyio.run(session)


def test_tool_arguments_that_are_settings_carry_the_settings_help(out_dir):
    """One source for a setting's help: the CLI, the studio's API and the MCP tools."""
    server = build_server(Settings.resolve(env={}, out_dir=out_dir))

    async def session():
        async with Client(server) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            checked = 0
            for name in ("make_run", "build_pe_prompt"):
                for arg, schema in tools[name].input_schema["properties"].items():
                    if arg in Settings.model_fields:
                        assert schema["description"] == Settings.model_fields[arg].description
                        if schema.get("default") is not None:  # None: the server's own
                            assert schema["default"] == Settings.model_fields[arg].default, arg
                        checked += 1
            assert checked == 8

    anyio.run(session)
    server.jobs.stop()
