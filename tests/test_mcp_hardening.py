"""Issue 22, reproduction 12: MCP arguments have the studio's caps, ids are checked, a
damaged record is a tool error without a traceback, and answers escape bidi characters."""

from __future__ import annotations

import json
import logging

import pytest

pytest.importorskip("mcp")
anyio = pytest.importorskip("anyio")
from mcp.client import Client  # noqa: E402

from fakes import draft_pipeline  # noqa: E402
from llmpopcorn.core.settings import Settings  # noqa: E402
from llmpopcorn.mcp.server import build_server  # noqa: E402

RLO = "\u202e"


def _data(result) -> dict:
    assert not result.is_error, result.content
    data = result.structured_content
    if data is not None:
        return data.get("result", data) if set(data) == {"result"} else data
    return json.loads(result.content[0].text)


def _text(result) -> str:
    return " ".join(getattr(part, "text", "") for part in result.content)


@pytest.fixture
def server(out_dir):
    srv = build_server(
        Settings.resolve(env={}, out_dir=out_dir, score=False), pipeline_factory=draft_pipeline
    )
    yield srv
    srv.jobs.stop()


def run(server, steps):
    async def session():
        async with Client(server) as client:
            return await steps(client)

    return anyio.run(session)


def test_a_damaged_record_is_a_tool_error_without_a_traceback(server, caplog):
    caplog.set_level(logging.DEBUG, logger="mcp")

    async def steps(client):
        made = _data(await client.call_tool("make_run", {"query": "a corgi learns to surf"}))
        assert made["state"] == "done"
        record = server.jobs.run_dir(made["id"]) / "record.json"
        record.write_text('{"run_id": 3, "garbage')
        return await client.call_tool("get_run", {"run_id": made["id"]})

    result = run(server, steps)
    assert result.is_error and "damaged" in _text(result) and "hint" in _text(result)
    assert "Traceback" not in caplog.text and "unexpected exception" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


def test_build_pe_prompt_has_the_studios_cap_on_references(server):
    async def steps(client):
        return await client.call_tool(
            "build_pe_prompt", {"query": "a corgi", "n_refs": 1_000_000_000}
        )

    result = run(server, steps)
    assert result.is_error and "n_refs" in _text(result)
    assert "1000000000" not in _text(result)


def test_a_huge_run_id_is_refused_without_echoing_it(server):
    huge = "a" * 1_000_000

    async def steps(client):
        return [
            await client.call_tool("get_run", {"run_id": huge}),
            await client.call_tool("get_run", {"run_id": "../../etc"}),
        ]

    for result in run(server, steps):
        assert result.is_error and "list_runs" in _text(result)
        assert len(_text(result)) < 300


def test_answers_carry_no_raw_bidi_characters(server):
    query = f"a corgi {RLO}learns to surf"

    async def steps(client):
        made = await client.call_tool("make_run", {"query": query, "seed": 2})
        listed = await client.call_tool("list_runs", {"search": "corgi"})
        return made, listed

    for result in run(server, steps):
        data = _data(result)
        text = json.dumps(data, ensure_ascii=False) + _text(result)
        assert RLO not in text
    assert "\\u202e" in json.dumps(_data(result), ensure_ascii=False)  # shown, escaped


@pytest.mark.parametrize(
    "tool, arguments, words",
    [
        ("make_run", {"query": "q" * 2_001}, "query"),
        ("make_run", {"query": "q", "variants": 11}, "variants"),
        ("make_run", {"query": "q", "wait_seconds": 1e12}, "wait_seconds"),
        ("list_runs", {"limit": 10**9}, "limit"),
        ("list_runs", {"search": "s" * 201}, "search"),
        ("score_idea", {"title": "t", "video_prompt": "v" * 2_001}, "video_prompt"),
    ],
)
def test_arguments_have_the_studios_caps(server, tool, arguments, words):
    async def steps(client):
        return await client.call_tool(tool, arguments)

    result = run(server, steps)
    assert result.is_error and words in _text(result)
