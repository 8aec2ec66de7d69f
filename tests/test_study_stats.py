"""The study's statistics on planted data: a real effect is found, no effect is not."""

import json

import numpy as np
import pytest

from fakes import TitleLengthScorer, draft_pipeline
from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.core.settings import Settings
from llmpopcorn.study.bench import BenchQuery, StudyPlan, run_study, study_rows
from llmpopcorn.study.report import write_reports
from llmpopcorn.study.stats import (
    bootstrap_ci,
    head_to_head,
    per_category,
    summarise,
    wilcoxon_p,
)

N = 30


def reply(length: int, i: int) -> str:
    title = (f"Idea {i} " + "x" * 60)[: max(6, min(length, 50))]
    return json.dumps({"title": title, "cover_prompt": "c", "video_prompt": "v"})


def planted_study(tmp_path, pe_shift: float, name: str):
    """A fake LLM per mode; the fake judge scores title length / 10, so PE titles longer
    by ``pe_shift`` characters on average are better by ``pe_shift / 10`` log2."""
    rng = np.random.default_rng(7)
    basic_len = rng.integers(15, 35, N)
    pe_len = np.rint(rng.integers(15, 35, N) + pe_shift).astype(int)
    replies = {
        "basic": [reply(int(n), i) for i, n in enumerate(basic_len)],
        "pe": [reply(int(n), i) for i, n in enumerate(pe_len)],
    }
    queries = [
        BenchQuery(f"{kind}-{i:03d}", kind, f"query number {i}")
        for i, kind in enumerate(["abstract", "concrete"] * (N // 2))
    ]
    scorer = TitleLengthScorer()

    def factory(settings):
        from llmpopcorn.enhance.prompts import BasicPromptBuilder

        # the statistics are under test, not PE's retrieval: both modes use one prompt
        llm = FakeLLM(list(replies[settings.mode]))
        return draft_pipeline(settings, llm=llm, scorer=scorer, prompt_builder=BasicPromptBuilder())

    settings = Settings.resolve(env={}, render=False)
    run = run_study(
        StudyPlan(queries=queries, llms=["fake"]),
        settings,
        tmp_path / name,
        pipeline_factory=factory,
    )
    return study_rows(run.store_path, run.keys)


def test_a_planted_pe_gain_is_detected(tmp_path):
    rows = planted_study(tmp_path, pe_shift=8, name="better")
    s = summarise(rows, n_boot=500)
    comp = {c["queries"]: c for c in s["pe_vs_basic"]}["all"]
    assert comp["pairs"] == N
    assert comp["wilcoxon_p"] < 0.01
    assert comp["ci95"][0] > 0 and comp["mean_gain_log2"] == pytest.approx(0.8, abs=0.35)


def test_no_effect_is_not_detected(tmp_path):
    rows = planted_study(tmp_path, pe_shift=0, name="same")
    comp = {c["queries"]: c for c in summarise(rows, n_boot=500)["pe_vs_basic"]}["all"]
    assert comp["wilcoxon_p"] > 0.05
    assert comp["ci95"][0] < 0 < comp["ci95"][1]


def test_the_test_holds_its_level_under_the_null():
    """Over many null data sets the Wilcoxon test rejects about 5 % of the time, and a
    0.3 sd shift over 100 pairs is found nearly always (the study's size)."""
    rng = np.random.default_rng(0)
    null = [wilcoxon_p(rng.normal(size=100)) < 0.05 for _ in range(400)]
    assert 0.02 <= np.mean(null) <= 0.09
    power = [wilcoxon_p(rng.normal(0.3, 1, size=100)) < 0.05 for _ in range(200)]
    assert np.mean(power) > 0.75
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0 and wilcoxon_p([1.0]) is None


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    lo, hi = bootstrap_ci(values, seed=1)
    assert lo < sum(values) / len(values) < hi
    assert bootstrap_ci(values, seed=1) == (lo, hi)
    assert bootstrap_ci([1.0]) is None


def row(qid, llm, mode, value, video="draft", refs=None, category=None, seed=42):
    return {
        "query_id": qid,
        "query_kind": qid.split("-")[0],
        "llm": llm,
        "mode": mode,
        "refs": refs if mode == "pe" else None,
        "video": video,
        "seed": seed,
        "status": "ok",
        "log2_comments": value,
        "category": category,
    }


def test_head_to_head_counts_wins_per_llm_and_video_with_ties_shared():
    rows = [
        row("abstract-1", "a", "basic", 3.0),
        row("abstract-1", "b", "basic", 2.0),
        row("abstract-1", "b", "pe", 4.0, video="ltx", refs=50),
        row("concrete-1", "a", "basic", 1.0),
        row("concrete-1", "b", "basic", 1.0),
        row("concrete-2", "a", "pe", 5.0, refs=10),
        row("concrete-2", "b", "basic", 2.0, video="ltx"),
    ]
    llm = head_to_head(rows, "llm")
    assert llm["abstract"] == {"a": 0, "b": 1}
    assert llm["concrete"] == {"a": 1.5, "b": 0.5}
    assert llm["all"] == {"a": 1.5, "b": 1.5}
    video = head_to_head(rows, "video")
    assert video["abstract"] == {"draft": 0, "ltx": 1}
    assert head_to_head(rows, "arm")["concrete"] == {"basic": 1, "pe@10": 1, "pe@50": 0}


def test_pairs_and_categories_follow_refs():
    rows = [
        row("abstract-1", "a", "basic", 1.0, category="Game"),
        row("abstract-1", "a", "pe", 3.0, refs=10, category="Anime"),
        row("abstract-1", "a", "pe", 2.0, refs=50, category="Anime"),
        row("abstract-2", "a", "basic", 2.0, category="Food"),
        row("abstract-2", "a", "pe", 2.0, refs=10, category="Food"),
    ]
    s = summarise(rows, n_boot=100)
    comp = {(c["refs"], c["queries"]): c for c in s["pe_vs_basic"]}
    assert comp[(10, "all")]["mean_gain_log2"] == pytest.approx(1.0)
    assert comp[(10, "all")]["pe_win_rate"] == pytest.approx(0.75)
    assert comp[(50, "all")]["pairs"] == 1
    cats = {(c["category"], c["refs"]): c for c in per_category(rows, n_boot=100)}
    assert cats[("Anime", 10)]["mean_gain_log2"] == pytest.approx(2.0)  # PE's category wins
    assert cats[("Food", 10)]["pairs"] == 1


def test_summary_files_carry_tables_charts_and_the_banner(tmp_path):
    rows = planted_study(tmp_path, pe_shift=8, name="files")
    for r in rows:
        r["is_llm"], r["ideator"], r["ideator_model"] = False, "offline", "offline-composer-v3"
    baseline = {
        "part": "reference",
        "k": 2,
        "videos": 4,
        "distinct_videos": 4,
        "true_mean_log2": 3.0,
        "predictor": "fake",
        "predicted_mean_log2": 2.5,
        "mae_log2": 0.5,
        "spearman": 0.4,
        "videos_in_predictor_memory": 0,
        "per_query": [{"true_log2": [2.0, 4.0], "predicted_log2": [2.5, 2.5]}] * 2,
    }
    summary = write_reports(rows, tmp_path, baseline=baseline, n_boot=200)
    page = (tmp_path / "summary.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "NO LLM WAS USED in 60 of 60" in page and summary["banner"]
    assert "Wilcoxon" in page and "Head to head" in page and "Human baseline" in page
    md = (tmp_path / "summary.md").read_text()
    assert "NO LLM WAS USED" in md and "true mean log2 comments 3.000" in md
