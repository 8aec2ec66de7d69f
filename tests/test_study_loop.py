"""The study's loop arm (issue 24): `popcorn bench --arms basic,pe,refine` scores every cell
with both loop judges and reports each arm's gain over basic under the reward judge and
under the evaluation judge side by side, with the study's own statistics."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from llmpopcorn.cli import main
from llmpopcorn.study.bench import StudyPlan, arm_id, arm_settings, load_queries
from pe_fixtures import write_corpus


@pytest.fixture
def data_dir(tmp_path):
    root = write_corpus(tmp_path / "data")
    prompts = root / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "abstract_prompts.txt").write_text("Something nostalgic\nA feeling of calm\n")
    (prompts / "concrete_prompts.txt").write_text("A corgi learns to surf\nA cat meets snow\n")
    return root


def bench(args, tmp_path):
    env = {"POPCORN_RENDER": "false", "POPCORN_EMBEDDER": "tfidf"}
    env["POPCORN_CACHE_DIR"] = str(tmp_path / "cache")
    return CliRunner().invoke(main, ["bench", *args], env=env)


def test_the_refine_arm_reports_both_judges_gains_side_by_side(data_dir, tmp_path):
    out = tmp_path / "study"
    result = bench(
        ["--data", str(data_dir), "--arms", "basic,pe,refine", "--refine", "2", "--refs", "5"]
        + ["--min-category-size", "1", "--baseline-k", "0", "--out", str(out), "--json"],
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["total"] == 12 and summary["ok"] == 12  # 4 queries x 3 arms
    loop = summary["loop"]
    assert loop["rounds"] == 2
    assert loop["judges"]["reward"]["predictor"] == "mmra-stack@reward"
    assert loop["judges"]["evaluation"]["predictor"] == "mmra-stack@evaluation"
    assert loop["independence"]["ids"]["reward_and_evaluation"] == 0
    assert loop["refine_shown_in_evaluation_memory"] == 0 and loop["refine_shown_videos"] > 0
    both = {(r["arm"], r["queries"]): r for r in loop["rows"]}
    assert set(both) >= {("refine", "all"), ("pe@5", "all"), ("refine", "concrete")}
    refine = both[("refine", "all")]
    assert refine["pairs"] == 4
    for side in ("reward", "evaluation", "reward_minus_evaluation"):
        assert refine[side]["mean_gain_log2"] is not None and refine[side]["p_adjusted"] is not None
    assert refine["reward_minus_evaluation"]["mean_gain_log2"] == pytest.approx(
        refine["reward"]["mean_gain_log2"] - refine["evaluation"]["mean_gain_log2"], abs=1e-9
    )
    # the refine arm's first round is the basic cell's idea (same prompt and seed), and it
    # keeps the best by the reward judge: never below basic under that judge
    with open(out / "results.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    reward = {(r["query_id"], r["mode"]): float(r["reward_log2"]) for r in rows}
    for (query, mode), value in reward.items():
        if mode == "refine":
            assert value >= reward[(query, "basic")] - 1e-9
    assert refine["reward"]["mean_gain_log2"] >= 0
    attrition = {a["arm"]: a for a in summary["attrition"]}
    assert attrition["refine"]["attempted"] == 4 and attrition["refine"]["valid"] == 4
    text = (out / "summary.md").read_text()
    assert "Loop arms: gain over basic under the reward judge" in text
    assert "reward - evaluation" in text


def test_the_refine_arm_is_basic_mode_with_rounds_and_bad_arms_are_refused(data_dir, tmp_path):
    from llmpopcorn.core.settings import Settings

    plan = StudyPlan(
        queries=load_queries(data_dir, ["concrete"]),
        llms=["offline"],
        modes=["basic", "refine"],
        refine_rounds=3,
    )
    settings = Settings.resolve(env={}, render=False)
    basic, refine = plan.arms(settings)
    assert (refine.mode, refine.rounds) == ("refine", 3) and basic.rounds == 0
    s = arm_settings(settings, refine, tmp_path)
    assert (s.mode, s.refine) == ("basic", 3)
    assert arm_settings(settings.model_copy(update={"refine": 5}), basic, tmp_path).refine == 0
    assert arm_id(refine) != arm_id(basic)
    for arms, message in (("basic,judge", "unknown arm"), ("refine", "compared with basic")):
        bad = bench(
            ["--data", str(data_dir), "--arms", arms, "--out", str(tmp_path / "x")], tmp_path
        )
        assert bad.exit_code == 2 and message in bad.output and "hint:" in bad.output


def test_a_study_with_the_refine_arm_gives_preference_pairs(data_dir, tmp_path):
    out = tmp_path / "study"
    args = ["--data", str(data_dir), "--arms", "basic,refine", "--refine", "1", "--limit", "1"]
    assert bench([*args, "--baseline-k", "0", "--out", str(out)], tmp_path).exit_code == 0
    listed = CliRunner().invoke(main, ["runs", "list", "--out", str(out)])
    (study_id,) = [w for w in listed.output.split() if w.startswith("study-")]
    result = CliRunner().invoke(
        main, ["runs", "export", study_id, "--pairs", "--min-margin", "0", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines and {line["query"] for line in lines} <= {
        "Something nostalgic",
        "A corgi learns to surf",
    }
    sources = {
        s["mode"] for line in lines for s in (line["chosen_source"], line["rejected_source"])
    }
    assert "refine" in sources  # refinement rounds are candidates too
    assert all(
        line["chosen_scores"]["reward"] > line["rejected_scores"]["reward"] for line in lines
    )
