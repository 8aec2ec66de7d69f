"""Learning from real posts (issue 24): `popcorn feedback` stores what a posted video got,
`popcorn predictor calibrate` fits the judge to a creator's outcomes with shrinkage toward
no correction, measured by leave-one-out; make and the report show the calibrated score
with its number of posts; a creator with no feedback sees exactly the judge's score."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.cli import main
from llmpopcorn.core.settings import Settings
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.predict import load_scorer
from llmpopcorn.predict.calibration import fit, leave_one_out, load_calibration, log2_outcome
from llmpopcorn.runs.store import Store
from pe_fixtures import corpus_rows

# -- the method -----------------------------------------------------------------------


def test_no_posts_is_exactly_the_identity():
    cal = fit([], [])
    assert cal.posts == 0 and cal.apply(3.7) == 3.7


def test_a_level_shift_is_learned_and_shrunk_by_the_number_of_posts():
    rng = np.random.default_rng(0)
    p = rng.normal(5, 0.8, size=40)
    y = p + 2.0  # an audience four times the corpus'
    few, many = fit(p[:2], y[:2]), fit(p, y)
    assert few.apply(5.0) - 5.0 == pytest.approx(2.0 * 2 / (2 + 5))
    assert many.apply(5.0) - 5.0 == pytest.approx(2.0 * 40 / (40 + 5))
    assert many.slope == pytest.approx(1.0)  # no tilt in the data, none fitted
    strong = fit(p, y, prior_posts=100)
    assert 0 < strong.offset < many.offset


def test_the_slope_is_shrunk_and_never_reverses_the_judge():
    p = np.linspace(2, 8, 30)
    steep = fit(p, 5 + 2 * (p - 5))
    assert 1.0 < steep.slope < 2.0  # toward 2, held back by the prior
    reversed_ = fit(p, 5 - 3 * (p - 5), prior_posts=0)
    assert reversed_.slope == 0.0


def test_leave_one_out_predicts_each_post_without_it():
    p = np.array([4.0, 5.0, 6.0, 5.0])
    y = np.array([6.0, 7.0, 8.0, 20.0])  # one wild post
    loo = leave_one_out(p, y, halfwidth=2.0)
    # the wild post's own calibrated value comes from the other three (offset ~2 x 3/8)
    others = fit(p[:3], y[:3])
    assert loo["rows"][3]["calibrated"] == pytest.approx(others.apply(5.0), abs=1e-4)
    assert loo["before"]["bias"] < 0 and loo["before"]["coverage"] == 0.75  # |2| <= 2
    assert loo["posts"] == 4


def test_outcomes_use_the_judge_s_label():
    assert log2_outcome(256) == 8.0 and log2_outcome(0) == 0.0


# -- end to end: a synthetic creator -----------------------------------------------------


def idea_reply(title: str) -> str:
    return json.dumps(
        {"title": title, "cover_prompt": f"cover of {title}", "video_prompt": f"clip of {title}"}
    )


@pytest.fixture(scope="module")
def scorer_settings(tmp_path_factory):
    out = tmp_path_factory.mktemp("creator")
    return Settings.resolve(env={}, out_dir=out, render=False)


def make_runs(settings: Settings, titles: list[str]) -> list:
    pipeline = Pipeline(settings, llm=FakeLLM([idea_reply(t) for t in titles]))
    return [pipeline.make(title) for title in titles]


def test_a_synthetic_creator_calibrates_the_judge_and_sees_it(scorer_settings):
    """The creator posts the ideas of held-out rows (fixture videos the shipped judge
    never saw) and their audience gives each 8 times the row's real comments."""
    out = Path(scorer_settings.out_dir)
    rows = corpus_rows()[::3][:12]
    records = make_runs(scorer_settings, [str(r["title_en"]) for r in rows])
    runner = CliRunner()
    for record, row in zip(records, rows, strict=True):
        comments = 8 * int(row["comment_count"])
        result = runner.invoke(
            main,
            ["feedback", record.run_id, "--comments", str(comments), "--out", str(out)]
            + ["--posted", "2026-11-30", "--likes", "10"],
        )
        assert result.exit_code == 0, result.output
        assert "recorded" in result.output
    # a later count replaces the earlier one (the row is updated, not duplicated)
    again = runner.invoke(
        main,
        [
            "feedback",
            str(records[0].run_dir),
            "--comments",
            str(8 * int(rows[0]["comment_count"])),
            "--out",
            str(out),
        ],
    )
    assert again.exit_code == 0 and "updated" in again.output
    with Store(out / "store.sqlite") as store:
        stored = store.feedback()
    assert len(stored) == 12 and stored[0]["likes"] is None and stored[1]["likes"] == 10
    assert stored[1]["predicted_log2"] == records[1].score.log2_comments

    result = runner.invoke(main, ["predictor", "calibrate", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "12 post(s)" in result.output and "leave-one-out" in result.output
    cal = load_calibration(out, records[0].score.predictor)
    assert cal is not None and cal.posts == 12 and cal.offset > 0.5
    loo = cal.leave_one_out
    assert loo["after"]["mae"] < loo["before"]["mae"]  # the audience shift is learned
    assert abs(loo["after"]["bias"]) < abs(loo["before"]["bias"])

    # the next run in this folder shows the calibrated score beside the judge's
    (later,) = make_runs(scorer_settings, ["a corgi learns to surf on a giant wave"])
    calibrated = later.score.extra["calibrated"]
    assert calibrated["posts"] == 12
    assert calibrated["log2_comments"] == pytest.approx(
        cal.apply(later.score.log2_comments), abs=1e-3
    )
    html = (Path(later.run_dir) / "report.html").read_text(encoding="utf-8")
    assert "Calibrated to your posts" in html and "from 12 of your posts" in html


def test_a_creator_without_feedback_sees_exactly_today_s_scores(tmp_path, scorer_settings):
    plain = scorer_settings.model_copy(update={"out_dir": tmp_path / "fresh"})
    (record,) = make_runs(plain, ["a corgi learns to surf on a giant wave"])
    assert "calibrated" not in record.score.extra
    direct = load_scorer(Settings.resolve(env={})).score_text(
        "a corgi learns to surf on a giant wave", category=record.score.category
    )
    assert direct.log2_comments == record.score.log2_comments
    assert "Calibrated" not in (Path(record.run_dir) / "report.html").read_text("utf-8")


def test_bad_feedback_input_is_an_error_with_a_hint(tmp_path, scorer_settings):
    out = tmp_path / "bad"
    out.mkdir()
    runner = CliRunner()
    cases = [
        (["feedback", "no-such-run", "--comments", "3", "--out", str(out)], "no run no-such-run"),
        (["feedback", "../../etc", "--comments", "3", "--out", str(out)], "not a run id"),
        (["feedback", "x" * 10, "--comments", "-1", "--out", str(out)], "-1"),
        (["predictor", "calibrate", "--out", str(out)], "no run store"),
    ]
    for args, expected in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 2, result.output
        assert expected in result.output
    (record,) = make_runs(scorer_settings.model_copy(update={"out_dir": out}), ["a cat naps"])
    future = runner.invoke(
        main,
        ["feedback", record.run_id, "--comments", "3", "--posted", "2999-01-01", "--out", str(out)],
    )
    assert future.exit_code == 2 and "hint:" in future.output and "future" in future.output
    assert not math.isnan(record.score.log2_comments)
