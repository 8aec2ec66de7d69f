"""Judge-guided refinement (issue 24): K rounds in which the LLM sees the reward judge's
score and explanation; the best idea by the reward judge is kept; every round carries both
loop judges' scores; the offline stand-in refines by search and says it is not an LLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import Idea
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.pipeline.refine import STANDIN_CANDIDATES, loop_judges
from pe_fixtures import write_corpus


def reply(title: str) -> str:
    return json.dumps({"title": title, "cover_prompt": f"cover: {title}", "video_prompt": "clip"})


def first_idea(pipeline: Pipeline, query: str):
    """A record holding its first idea, through the public stages (as make does)."""
    record = pipeline.new_record(query)
    pipeline.prepare(record)
    prompt, category = pipeline.plan(record.query)
    pipeline.apply_prompt(record, prompt)
    record.category = category
    pipeline.ideate(record, prompt)
    return record, prompt


def settings_for(tmp_path, **extra) -> Settings:
    return Settings.resolve(env={}, out_dir=tmp_path / "runs", render=False, **extra)


def test_the_stand_in_refines_by_search_and_says_it_is_no_llm(tmp_path):
    pipeline = Pipeline(settings_for(tmp_path))
    record, prompt = first_idea(pipeline, "a corgi learns to surf")
    first = record.idea
    pipeline.refine(record, prompt, rounds=2)
    ref = record.refinement
    assert ref.rounds_asked == 2 and [r.round for r in ref.rounds] == [0, 1, 2]
    assert "not an LLM" in ref.method
    assert ref.rounds[0].idea == first and ref.rounds[0].candidates == 1
    for step in ref.rounds[1:]:
        assert step.candidates == STANDIN_CANDIDATES and len(step.seeds) == STANDIN_CANDIDATES
        assert step.idea is not None and step.idea.title != first.title
    for step in ref.rounds:  # both judges scored every round
        assert step.reward["predictor"] == "mmra-stack@reward"
        assert step.evaluation["predictor"] == "mmra-stack@evaluation"
    best = max(ref.rounds, key=lambda r: r.reward["log2_comments"])
    assert ref.kept == best.round and record.idea == best.idea
    assert best.reward["log2_comments"] >= ref.rounds[0].reward["log2_comments"]
    assert ref.judges["reward"]["part"] == "reward"
    assert ref.judges["evaluation"]["part"] == "evaluation"
    assert ref.judges["independence"]["ids"]["reward_and_evaluation"] == 0
    assert any(n.startswith("Refinement: 2 round(s)") for n in record.notes)
    # the same seed refines the same way (the stand-in is deterministic)
    again, prompt2 = first_idea(Pipeline(settings_for(tmp_path)), "a corgi learns to surf")
    Pipeline(settings_for(tmp_path)).refine(again, prompt2, rounds=2)
    assert again.idea == record.idea and again.refinement.kept == ref.kept


def test_an_llm_sees_the_judge_s_score_and_explanation_and_the_best_is_kept(tmp_path):
    data = write_corpus(tmp_path / "data")
    titles = [
        "Corgi surfs a wave",
        "My corgi tried surfing and the ocean won",
        "Dog on a board",
    ]
    judges = loop_judges(settings_for(tmp_path, data_dir=data))
    llm = FakeLLM([reply(t) for t in titles])
    pipeline = Pipeline(settings_for(tmp_path, data_dir=data), llm=llm)
    record, prompt = first_idea(pipeline, "a corgi learns to surf")
    pipeline.refine(record, prompt, rounds=2)
    ref = record.refinement
    assert "LLM rewrites" in ref.method
    assert [r.idea.title for r in ref.rounds] == titles
    # what round 1 was told: the reward judge's prediction for round 0 and why
    told = llm.requests[1].messages
    assert told[-2].role == "assistant" and titles[0] in told[-2].content
    feedback = told[-1].content
    first_reward = ref.rounds[0].reward
    assert f"about {2 ** first_reward['log2_comments']:.0f} comments" in feedback
    assert "80 % interval" in feedback and "most similar" in feedback
    neighbour = first_reward["neighbours"][0]  # (the fixture corpus lacks its title)
    assert f"video {neighbour['video_id']}" in feedback
    assert f"{neighbour['comment_count']:,} comments" in feedback
    # examples come from the corpus' reference part, never from a judge's part
    assert "reference part" in ref.shown["examples_source"] and ref.shown["examples"] > 0
    # the evaluation judge never reaches the LLM
    assert "evaluation" not in feedback.lower()
    # kept: the best by the reward judge, whichever round it was
    scores = [
        judges.score(
            Idea(title=t, cover_prompt="c", video_prompt="v"),
            category=ref.rounds[0].reward["category"],
        ).reward.log2_comments
        for t in titles
    ]
    assert ref.kept == max(range(3), key=lambda i: (scores[i], -i))
    assert record.idea.title == titles[ref.kept]


def test_a_round_without_a_valid_idea_is_recorded_and_the_run_goes_on(tmp_path):
    llm = FakeLLM([reply("A corgi on a surfboard"), "not json", "still not json", "nope"])
    pipeline = Pipeline(settings_for(tmp_path, max_attempts=3), llm=llm)
    record, prompt = first_idea(pipeline, "a corgi learns to surf")
    pipeline.refine(record, prompt, rounds=1)
    step = record.refinement.rounds[1]
    assert step.idea is None and "no valid idea" in step.error and len(step.attempts) == 3
    assert record.refinement.kept == 0 and record.idea.title == "A corgi on a surfboard"
    assert "(1 without a valid idea)" in record.notes[-1]


def test_a_title_copying_what_the_llm_was_shown_is_re_asked(tmp_path):
    data = write_corpus(tmp_path / "data")
    pipeline = Pipeline(settings_for(tmp_path, data_dir=data), llm=FakeLLM([reply("Corgi surf")]))
    record, prompt = first_idea(pipeline, "a corgi learns to surf")
    from llmpopcorn.pipeline.refine import category_examples

    examples, _ = category_examples(record, pipeline.settings, record.category["name"])
    copied = examples[0].title
    pipeline.llm.replies = [reply(copied), reply("Corgi rides its first wave at dawn")]
    pipeline.refine(record, prompt, rounds=1)
    step = record.refinement.rounds[1]
    assert "copies the title" in step.attempts[0].error
    assert step.idea.title == "Corgi rides its first wave at dawn"


@pytest.mark.parametrize("rounds", [0])
def test_no_rounds_is_no_refinement(tmp_path, rounds):
    pipeline = Pipeline(settings_for(tmp_path))
    record, prompt = first_idea(pipeline, "a corgi learns to surf")
    pipeline.refine(record, prompt, rounds=rounds)
    assert record.refinement is None


def test_make_refine_2_from_the_command_line(tmp_path):
    from click.testing import CliRunner

    from llmpopcorn.cli import main

    out = tmp_path / "runs"
    result = CliRunner().invoke(
        main,
        [
            "make",
            "a corgi learns to surf",
            "--refine",
            "2",
            "--out",
            str(out),
            "--json",
        ],
        env={"POPCORN_RENDER": "false"},
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    ref = record["refinement"]
    assert ref["rounds_asked"] == 2 and len(ref["rounds"]) == 3
    assert record["idea"] == ref["rounds"][ref["kept"]]["idea"]
    assert "refine" in record["timings"]
    bad = CliRunner().invoke(main, ["make", "q", "--refine", "-1", "--out", str(out)])
    assert bad.exit_code == 2 and "refine" in bad.output


def test_batch_items_are_refined_and_refinement_is_part_of_their_identity(tmp_path):
    from llmpopcorn.runs.batch import run_batch
    from llmpopcorn.runs.store import Store

    out = tmp_path / "out"
    settings = settings_for(tmp_path, refine=2)
    run = run_batch(
        ["a corgi learns to surf", "a cat sees snow"], settings, out_dir=out, variants=2
    )
    plain = run_batch(
        ["a corgi learns to surf", "a cat sees snow"],
        settings_for(tmp_path),
        out_dir=out,
        variants=2,
    )
    assert run.batch_id != plain.batch_id  # other settings, another batch
    with Store(out / "store.sqlite") as store:
        items = store.items(kind="batch", group=run.batch_id)
    assert len(items) == 4 and all(it["status"] == "ok" for it in items)
    for it in items:
        record = json.loads((Path(it["run_dir"]) / "record.json").read_text())
        ref = record["refinement"]
        assert len(ref["rounds"]) == 3 and ref["rounds"][0]["seeds"] == [record["seed"]]
        assert record["idea"]["title"] == ref["rounds"][ref["kept"]]["idea"]["title"]


def test_the_studio_and_the_mcp_server_take_refine(tmp_path):
    """`refine` in a studio request (POST /api/runs) and in the MCP make_run tool."""
    import time

    import anyio
    from fastapi.testclient import TestClient
    from mcp.client import Client

    from llmpopcorn.mcp.server import build_server
    from llmpopcorn.web.app import create_app

    out = tmp_path / "studio"
    base = Settings.resolve(env={}, out_dir=out, render=False)
    app = create_app(base)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        job = client.post("/api/runs", json={"query": "a corgi learns to surf", "refine": 2})
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 300  # a bound, not a speed claim
        while (view := client.get(f"/api/runs/{job.json()['id']}").json())["state"] not in (
            "done",
            "failed",
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert view["state"] == "done", view
        ref = view["record"]["refinement"]
        assert len(ref["rounds"]) == 3 and ref["rounds"][0]["evaluation"]["predictor"]
        too_many = client.post("/api/runs", json={"query": "q", "refine": 9})
        assert too_many.status_code in (400, 422)
    server = build_server(Settings.resolve(env={}, out_dir=tmp_path / "mcp", render=False))

    async def session():
        async with Client(server) as client:
            made = await client.call_tool(
                "make_run", {"query": "a cat sees snow", "refine": 2, "render": False}
            )
            assert not made.is_error, made.content
            data = made.structured_content or json.loads(made.content[0].text)
            data = data.get("result", data)
            assert data["state"] == "done", data
            rounds = data["refinement"]["rounds"]
            assert len(rounds) == 3 and all(r["evaluation_log2"] is not None for r in rounds)
            assert data["idea"]["title"] == rounds[data["refinement"]["kept"]]["title"]

    anyio.run(session)
    server.jobs.stop()
