"""The study's statistics on planted data: the query is the unit (a null with several
seeds per query holds its level, a planted effect is found), families of tests are
adjusted, failures are counted, and a comparison the judge cannot see is not printed."""

import hashlib
import json

import numpy as np
import pytest

from fakes import TitleLengthScorer, draft_pipeline
from llmpopcorn.backends.base import LLM
from llmpopcorn.core.settings import Settings
from llmpopcorn.study.bench import BenchQuery, StudyPlan, run_study, study_rows
from llmpopcorn.study.report import write_reports
from llmpopcorn.study.stats import (
    attrition,
    bootstrap_ci,
    compare_arms,
    head_to_head,
    head_to_heads,
    holm,
    per_category,
    summarise,
    wilcoxon_p,
)

N = 30


def _unit(*parts) -> float:
    """A deterministic number in [0, 1) from ``parts`` (no RNG shared across threads)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class PlantedLLM(LLM):
    """Answers a title whose length (= the fake judge's score x 10) is a query effect
    plus a query x mode effect plus per-seed noise, plus ``shift`` characters in PE mode:
    a function of the request alone, so concurrency cannot reorder it."""

    name = "planted"

    def __init__(self, mode: str, shift: float):
        self.mode, self.shift = mode, shift

    def complete(self, request) -> str:
        query, seed = request.context["query"], request.seed
        length = (
            15
            + 20 * _unit("query", query)
            + 8 * _unit("interaction", query, self.mode)
            + 6 * _unit("seed", query, self.mode, seed)
            + (self.shift if self.mode == "pe" else 0)
        )
        title = ("Idea " + "x" * 60)[: max(6, min(int(round(length)), 50))]
        return json.dumps({"title": title, "cover_prompt": "c", "video_prompt": "v"})


def planted_study(tmp_path, pe_shift: float, name: str, seeds=(42,)):
    """A study through the real runner with a fake LLM per mode and the fake judge
    (title length / 10): PE titles longer by ``pe_shift`` characters score
    ``pe_shift / 10`` log2 higher."""
    queries = [
        BenchQuery(f"{kind}-{i:03d}", kind, f"query number {i}")
        for i, kind in enumerate(["abstract", "concrete"] * (N // 2))
    ]
    scorer = TitleLengthScorer()

    def factory(settings):
        from llmpopcorn.enhance.prompts import BasicPromptBuilder

        # the statistics are under test, not PE's retrieval: both modes use one prompt
        llm = PlantedLLM(settings.mode, pe_shift)
        return draft_pipeline(settings, llm=llm, scorer=scorer, prompt_builder=BasicPromptBuilder())

    settings = Settings.resolve(env={}, render=False)
    run = run_study(
        StudyPlan(queries=queries, llms=["fake"], seeds=list(seeds)),
        settings,
        tmp_path / name,
        pipeline_factory=factory,
    )
    return study_rows(run.store_path, run.keys)


def test_a_planted_pe_gain_is_detected_with_seeds_as_per_query_pairs(tmp_path):
    rows = planted_study(tmp_path, pe_shift=8, name="better", seeds=(1, 2, 3))
    assert len(rows) == 2 * N * 3
    s = summarise(rows, n_boot=500)
    comp = {c["queries"]: c for c in s["pe_vs_basic"]}["all"]
    assert comp["pairs"] == N  # pairs = queries, not queries x seeds
    assert comp["cells_used"] == {"pe@50": 3 * N, "basic": 3 * N}
    assert comp["wilcoxon_p"] < 0.01 and comp["p_adjusted"] < 0.05
    assert comp["ci95"][0] > 0 and comp["mean_gain_log2"] == pytest.approx(0.8, abs=0.35)
    assert {c["queries"]: c["pairs"] for c in s["pe_vs_basic"]} == {
        "abstract": N // 2,
        "all": N,
        "concrete": N // 2,
    }


def test_no_effect_is_not_detected(tmp_path):
    rows = planted_study(tmp_path, pe_shift=0, name="same", seeds=(1, 2))
    comp = {c["queries"]: c for c in summarise(rows, n_boot=500)["pe_vs_basic"]}["all"]
    assert comp["pairs"] == N
    assert comp["wilcoxon_p"] > 0.05
    assert comp["ci95"][0] < 0 < comp["ci95"][1]


def simulated_rows(rng, effect: float, queries: int = 40, seeds: int = 5) -> list[dict]:
    """One simulated study: score = query effect + query x arm effect (a query one arm
    suits, whatever the seed) + per-cell noise, plus ``effect`` for PE."""
    rows = []
    base = rng.normal(0, 1, queries)
    for mode in ("basic", "pe"):
        inter = rng.normal(0, 0.5, queries)
        noise = rng.normal(0, 0.3, (queries, seeds))
        for q in range(queries):
            for s in range(seeds):
                value = base[q] + inter[q] + noise[q, s] + (effect if mode == "pe" else 0)
                rows.append(row(f"abstract-{q}", "a", mode, float(value), refs=50, seed=s))
    return rows


def naive_seed_pairs_p(rows) -> float:
    """The old analysis: every (query, seed) a pair, as if independent."""
    basic = {(r["query_id"], r["seed"]): r["log2_comments"] for r in rows if r["mode"] == "basic"}
    pe = [r for r in rows if r["mode"] == "pe"]
    return wilcoxon_p([r["log2_comments"] - basic[(r["query_id"], r["seed"])] for r in pe])


def test_several_seeds_per_query_hold_the_nominal_rate_under_the_null():
    """300 simulated null studies (40 queries x 5 seeds, query x arm interaction): the
    per-query test rejects about 5 % and its 95 % interval covers 0 about 95 % of the
    time; counting seeds as pairs on the same data rejects far more (the old bug)."""
    rng = np.random.default_rng(2026)
    rejected, covered, naive = [], [], []
    for _ in range(300):
        rows = simulated_rows(rng, effect=0.0)
        comp = compare_arms(rows, "pe@50", n_boot=300, seed=1)
        assert comp["pairs"] == 40
        rejected.append(comp["wilcoxon_p"] < 0.05)
        covered.append(comp["ci95"][0] <= 0 <= comp["ci95"][1])
        naive.append(naive_seed_pairs_p(rows) < 0.05)
    assert 0.02 <= np.mean(rejected) <= 0.085
    assert 0.9 <= np.mean(covered) <= 0.98
    assert np.mean(naive) > 0.25  # the seeds-as-pairs analysis fails this test


def test_a_planted_effect_is_found_with_several_seeds_per_query():
    rng = np.random.default_rng(7)
    found = [
        compare_arms(simulated_rows(rng, effect=0.5), "pe@50", n_boot=200)["wilcoxon_p"] < 0.05
        for _ in range(100)
    ]
    assert np.mean(found) > 0.8


def test_the_wilcoxon_test_holds_its_level_and_has_power():
    rng = np.random.default_rng(0)
    null = [wilcoxon_p(rng.normal(size=100)) < 0.05 for _ in range(400)]
    assert 0.02 <= np.mean(null) <= 0.09
    power = [wilcoxon_p(rng.normal(0.3, 1, size=100)) < 0.05 for _ in range(200)]
    assert np.mean(power) > 0.75
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0 and wilcoxon_p([1.0]) is None


def test_holm_adjusts_a_family_step_down_and_keeps_missing_values():
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == [] and holm([None]) == [None]
    # monotone: a smaller raw p never gets a larger adjusted p
    ps = list(np.random.default_rng(3).uniform(0, 0.2, 12))
    adj = holm(ps)
    order = np.argsort(ps)
    assert all(adj[order[i]] <= adj[order[i + 1]] for i in range(11))
    assert all(a >= p for a, p in zip(adj, ps, strict=True))


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    lo, hi = bootstrap_ci(values, seed=1)
    assert lo < sum(values) / len(values) < hi
    assert bootstrap_ci(values, seed=1) == (lo, hi)
    assert bootstrap_ci([1.0]) is None


def row(qid, llm, mode, value, video="draft", refs=None, category=None, seed=42, **extra):
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
        **extra,
    }


def failed(qid, llm, mode, refs=None, reason=None, seed=42, error="boom"):
    r = row(qid, llm, mode, None, refs=refs, seed=seed)
    r.update(status="failed", failure=reason, error=error)
    return r


def test_head_to_head_counts_one_win_per_query_with_ties_shared():
    rows = [
        row("abstract-1", "a", "basic", 3.0),
        row("abstract-1", "b", "basic", 2.0),
        row("abstract-1", "b", "pe", 4.0, video="ltx", refs=50),
        row("concrete-1", "a", "basic", 1.0),
        row("concrete-1", "b", "basic", 1.0),
        row("concrete-2", "a", "pe", 5.0, refs=10),
        row("concrete-2", "b", "basic", 2.0, video="ltx"),
        # seeds average within a query before the winner is picked: b's mean 2.5 < 3
        row("concrete-3", "a", "basic", 3.0, seed=1),
        row("concrete-3", "b", "basic", 4.0, seed=1),
        row("concrete-3", "b", "basic", 1.0, seed=2),
    ]
    llm = head_to_head(rows, "llm")
    assert llm["abstract"] == {"a": 0, "b": 1}
    assert llm["concrete"] == {"a": 2.5, "b": 0.5}
    assert llm["all"] == {"a": 2.5, "b": 1.5}  # 4 queries, 4 wins
    video = head_to_head(rows, "video")
    assert video["abstract"] == {"draft": 0, "ltx": 1}
    assert head_to_head(rows, "arm")["concrete"] == {"basic": 2, "pe@10": 1, "pe@50": 0}


def test_the_video_table_is_not_printed_when_the_judge_reads_no_pixels():
    reads = ["category", "title"]
    rows = [
        row("abstract-1", "a", "basic", 3.0, judge_reads=reads),
        row("abstract-1", "a", "basic", 2.0, video="ltx", judge_reads=reads),
    ]
    tables = head_to_heads(rows)
    assert tables["video"] == {
        "measurable": False,
        "reason": "not measurable with this judge (it reads title and category)",
    }
    assert tables["llm"]["all"] == {"a": 1}
    # a judge that reads the clip can compare generators
    seeing = [dict(r, judge_reads=[*reads, "clip"]) for r in rows]
    assert head_to_heads(seeing)["video"]["all"] == {"draft": 1, "ltx": 0}


def test_pairs_categories_and_their_exploratory_family():
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
    assert comp[(10, "all")]["win_rate"] == pytest.approx(0.75)
    assert comp[(50, "all")]["pairs"] == 1
    assert all(c["adjustment"] == "holm" for c in s["pe_vs_basic"])
    cats = {(c["category"], c["refs"]): c for c in per_category(rows, n_boot=100)}
    assert cats[("Anime", 10)]["mean_gain_log2"] == pytest.approx(2.0)  # PE's category wins
    assert cats[("Food", 10)]["pairs"] == 1
    assert all(c["exploratory"] for c in cats.values())


def test_attrition_counts_failures_by_reason_and_the_worst_case_line_sees_them():
    rows = []
    for q in range(6):
        qid = f"abstract-{q}"
        rows.append(row(qid, "a", "basic", 2.0 + q / 10, attempt_reasons=[]))
        if q < 3:  # PE fails on half the queries, and scores higher where it works
            reason = ("truncated", "timeout", None)[q]
            rows.append(failed(qid, "a", "pe", refs=50, reason=reason))
        else:
            rows.append(row(qid, "a", "pe", 3.0 + q / 10, refs=50, attempt_reasons=["parse"]))
    table = {a["arm"]: a for a in attrition(rows)}
    assert table["pe@50"]["attempted"] == 6 and table["pe@50"]["valid"] == 3
    assert table["pe@50"]["invalid_by_reason"] == {"truncated": 1, "timeout": 1, "error": 1}
    assert table["pe@50"]["rejected_replies_by_reason"] == {"parse": 3}
    assert table["basic"]["invalid"] == 0 and table["basic"]["valid_rate"] == 1.0
    comp = compare_arms(rows, "pe@50", n_boot=200)
    assert comp["pairs"] == 3 and comp["mean_gain_log2"] == pytest.approx(1.0)
    worst = comp["worst_case"]
    # the failed PE cells count as PE's worst score (3.3): gains 1.3 1.2 1.1 1 1 1
    assert worst["pairs"] == 6 and worst["imputed"] == {"pe@50": 3, "basic": 0}
    assert worst["mean_gain_log2"] == pytest.approx((1.3 + 1.2 + 1.1 + 3) / 6)


def test_summary_files_carry_tables_charts_and_the_banner(tmp_path):
    rows = planted_study(tmp_path, pe_shift=8, name="files")
    for r in rows:
        r["is_llm"], r["ideator"], r["ideator_model"] = False, "offline", "offline-composer-v3"
        r["judge_reads"] = ["title", "category"]
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
    assert "Holm" in page and "Attrition" in page and "exploratory" in page
    assert "not measurable with this judge (it reads title and category)" in page
    md = (tmp_path / "summary.md").read_text()
    assert "NO LLM WAS USED" in md and "true mean log2 comments 3.000" in md
    stored = json.loads((tmp_path / "summary.json").read_text())
    comp = stored["pe_vs_basic"][0]
    assert {"wilcoxon_p", "p_adjusted", "worst_case"} <= set(comp)
    assert {a["arm"] for a in stored["attrition"]} == {"basic", "pe@50"}
    assert stored["head_to_head"]["video"]["measurable"] is False
