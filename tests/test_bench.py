import json
import sqlite3

import pytest
from click.testing import CliRunner

from fakes import TitleLengthScorer, draft_pipeline
from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.bench import (
    StudyPlan,
    bootstrap_ci,
    load_queries,
    run_study,
    summarise,
    write_reports,
)
from llmpopcorn.errors import DataError
from llmpopcorn.store import CellKey, Store


@pytest.fixture
def data_dir(tmp_path):
    prompts = tmp_path / "data" / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "abstract_prompts.txt").write_text("Something nostalgic\n\nA feeling of calm\n")
    (prompts / "concrete_prompts.txt").write_text("A corgi learns to surf\nA cat meets snow")
    return tmp_path / "data"


def factory(scorer, llm=None):
    return lambda settings: draft_pipeline(settings, llm=llm, scorer=scorer)


def test_load_queries_kinds_limit_and_errors(data_dir, tmp_path):
    qs = load_queries(data_dir)
    assert [q.query_id for q in qs] == [
        "abstract-001",
        "abstract-002",
        "concrete-001",
        "concrete-002",
    ]
    assert load_queries(data_dir, ["concrete"], limit=1)[0].text == "A corgi learns to surf"
    with pytest.raises(DataError, match="POPCORN_DATA"):
        load_queries(None)
    with pytest.raises(DataError, match="query file not found"):
        load_queries(tmp_path / "nowhere")
    with pytest.raises(DataError, match="unknown query kind"):
        load_queries(data_dir, ["funny"])


def test_study_runs_every_cell_then_resumes_without_redoing(data_dir, tmp_path):
    from llmpopcorn.settings import Settings

    settings = Settings.resolve(env={}, render=False)
    plan = StudyPlan(
        queries=load_queries(data_dir), llms=["offline"], modes=["basic"], seeds=[1, 2]
    )
    scorer = TitleLengthScorer()
    store = run_study(plan, settings, tmp_path / "study", pipeline_factory=factory(scorer))
    rows = Store(store).rows()
    assert len(rows) == plan.size == 8 and all(r["status"] == "ok" for r in rows)
    assert all(r["log2_comments"] == pytest.approx(len(r["title"]) / 10) for r in rows)
    assert scorer.calls == 8
    seen = []
    run_study(
        plan,
        settings,
        tmp_path / "study",
        pipeline_factory=factory(scorer),
        on_cell=lambda k, s: seen.append(s),
    )
    assert scorer.calls == 8 and seen == ["skipped"] * 8


def test_failed_cells_are_recorded_and_retried(data_dir, tmp_path):
    from llmpopcorn.settings import Settings

    settings = Settings.resolve(env={}, render=False, max_attempts=1)
    plan = StudyPlan(queries=load_queries(data_dir, ["concrete"]), llms=["fake"], modes=["basic"])
    good = json.dumps({"title": "Good", "cover_prompt": "c", "video_prompt": "v"})
    store = run_study(
        plan,
        settings,
        tmp_path / "s",
        pipeline_factory=factory(TitleLengthScorer(), FakeLLM(["junk", good])),
    )
    statuses = [r["status"] for r in Store(store).rows()]
    assert statuses == ["failed", "ok"]
    assert "no valid idea" in Store(store).rows("failed")[0]["error"]
    # --keep-failed leaves it; the default retries it
    run_study(
        plan,
        settings,
        tmp_path / "s",
        retry_failed=False,
        pipeline_factory=factory(TitleLengthScorer(), FakeLLM([])),
    )
    assert Store(store).rows("failed")
    run_study(
        plan,
        settings,
        tmp_path / "s",
        pipeline_factory=factory(TitleLengthScorer(), FakeLLM([good])),
    )
    assert not Store(store).rows("failed")


def test_setup_errors_stop_the_study(data_dir, tmp_path):
    from llmpopcorn.errors import UnknownBackendError
    from llmpopcorn.settings import Settings

    plan = StudyPlan(queries=load_queries(data_dir), llms=["no-such-llm"], modes=["basic"])
    with pytest.raises(UnknownBackendError):
        run_study(
            plan,
            Settings.resolve(env={}, render=False),
            tmp_path / "s",
            pipeline_factory=factory(TitleLengthScorer()),
        )
    rows = Store(tmp_path / "s" / "store.sqlite").rows()
    assert len(rows) == 1 and rows[0]["status"] == "failed"


def rows_for(values):
    """Synthetic store rows: values[(query_id, mode)] = log2 comments."""
    rows = []
    for (qid, mode), value in values.items():
        rows.append(
            {
                "query_id": qid,
                "query_kind": qid.split("-")[0],
                "llm": "x",
                "mode": mode,
                "video": "draft",
                "seed": 42,
                "status": "ok",
                "log2_comments": value,
            }
        )
    return rows


def test_summary_pairs_pe_with_basic_by_query():
    rows = rows_for(
        {
            ("abstract-1", "basic"): 1.0,
            ("abstract-1", "pe"): 3.0,
            ("abstract-2", "basic"): 2.0,
            ("abstract-2", "pe"): 2.0,
            ("concrete-1", "basic"): 4.0,
            ("concrete-1", "pe"): 3.0,
        }
    )
    rows.append({**rows[0], "query_id": "concrete-9", "status": "failed", "log2_comments": None})
    s = summarise(rows, n_boot=200)
    cell = {(c["mode"], c["queries"]): c for c in s["cells"]}
    assert cell[("basic", "all")]["mean_log2_comments"] == pytest.approx(7 / 3)
    assert cell[("pe", "abstract")]["mean_log2_comments"] == pytest.approx(2.5)
    assert cell[("basic", "all")]["failed"] == 1
    comp = {c["queries"]: c for c in s["pe_vs_basic"]}
    assert comp["all"]["pairs"] == 3
    assert comp["all"]["mean_gain_log2"] == pytest.approx((2 + 0 - 1) / 3)
    assert comp["all"]["pe_win_rate"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert comp["abstract"]["pe_win_rate"] == pytest.approx(0.75)
    assert s["total"] == 7 and s["ok"] == 6


def test_bootstrap_interval_brackets_the_mean_and_is_seeded():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    lo, hi = bootstrap_ci(values, seed=1)
    assert lo < sum(values) / len(values) < hi
    assert bootstrap_ci(values, seed=1) == (lo, hi)
    assert bootstrap_ci([1.0]) is None


def test_reports_and_cli(data_dir, tmp_path, monkeypatch):
    from llmpopcorn.cli import main

    out = tmp_path / "study"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "--data",
            str(data_dir),
            "--mode",
            "basic",
            "--limit",
            "1",
            "--no-render",
            "--out",
            str(out),
            "--seeds",
            "1,2",
            "--json",
        ],
        env={"POPCORN_SCORE": "false"},
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["total"] == 4 and summary["ok"] == 4 and summary["scored"] == 0
    assert (out / "summary.md").exists() and (out / "results.csv").exists()
    with sqlite3.connect(out / "store.sqlite") as conn:
        assert conn.execute("select count(*) from cells where status='ok'").fetchone()[0] == 4
    bad = CliRunner().invoke(
        main, ["bench", "--data", str(data_dir), "--seeds", "a,b", "--out", str(out)]
    )
    assert bad.exit_code == 2 and "--seeds must be integers" in bad.stderr


def test_store_survives_reopen(tmp_path):
    key = CellKey("q1", "llm", "basic", "draft", 42)
    with Store(tmp_path / "s.sqlite") as store:
        store.start(key, "abstract", "a query")
        assert store.status(key) == "running"
    with Store(tmp_path / "s.sqlite") as store:
        assert store.status(key) == "running"
        store.finish(key, status="ok", log2_comments=3.5)
        assert store.rows()[0]["log2_comments"] == 3.5
    write_reports(tmp_path / "s.sqlite", tmp_path)
    assert "1 of 1 cells finished" in (tmp_path / "summary.md").read_text()
