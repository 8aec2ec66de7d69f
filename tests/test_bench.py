import csv
import errno
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fakes import TitleLengthScorer, draft_pipeline
from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.core.errors import ConfigError, DataError, PopcornError
from llmpopcorn.core.settings import Settings
from llmpopcorn.runs.identity import cell_identity
from llmpopcorn.runs.store import Store
from llmpopcorn.study.bench import (
    CELL,
    StudyPlan,
    load_queries,
    run_study,
    study_rows,
)
from pe_fixtures import write_corpus


@pytest.fixture
def data_dir(tmp_path):
    root = write_corpus(tmp_path / "data")
    prompts = root / "prompts"
    prompts.mkdir(parents=True)
    (prompts / "abstract_prompts.txt").write_text("Something nostalgic\n\nA feeling of calm\n")
    (prompts / "concrete_prompts.txt").write_text("A corgi learns to surf\nA cat meets snow")
    return root


def factory(scorer, llm=None):
    return lambda settings: draft_pipeline(settings, llm=llm, scorer=scorer)


def pe_settings(data_dir, tmp_path, **kw):
    return Settings.resolve(
        env={},
        render=False,
        data_dir=data_dir,
        embedder="tfidf",
        cache_dir=tmp_path / "cache",
        min_category_size=1,
        **kw,
    )


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
    settings = Settings.resolve(env={}, render=False)
    plan = StudyPlan(
        queries=load_queries(data_dir), llms=["offline"], modes=["basic"], seeds=[1, 2]
    )
    scorer = TitleLengthScorer()
    run = run_study(plan, settings, tmp_path / "study", pipeline_factory=factory(scorer))
    rows = study_rows(run.store_path, run.keys)
    assert len(rows) == plan.size(settings) == 8 and all(r["status"] == "ok" for r in rows)
    assert all(r["log2_comments"] == pytest.approx(len(r["title"]) / 10) for r in rows)
    assert scorer.calls == 8 and run.computed == 8
    seen = []
    again = run_study(
        plan,
        settings,
        tmp_path / "study",
        pipeline_factory=factory(scorer),
        on_cell=lambda k, arm, s: seen.append(s),
    )
    assert scorer.calls == 8 and seen == ["skipped"] * 8 and again.keys == run.keys
    # nothing left to do: the executor (models, a Ray cluster) is never started
    from llmpopcorn.runs.executors import LocalExecutor

    class Refuses(LocalExecutor):
        def start(self, *args, **kwargs):
            raise AssertionError("started for a finished study")

    done = run_study(
        plan, settings, tmp_path / "study", pipeline_factory=factory(scorer), executor=Refuses()
    )
    assert done.skipped == 8 and done.computed == 0


def test_refs_sweep_and_other_settings_make_new_cells_basic_cells_are_shared(data_dir, tmp_path):
    settings = pe_settings(data_dir, tmp_path, n_refs=4)
    queries = load_queries(data_dir, ["concrete"])
    out = tmp_path / "study"
    scorer = TitleLengthScorer()
    first = run_study(
        StudyPlan(queries=queries, llms=["offline"]),
        settings,
        out,
        pipeline_factory=factory(scorer),
    )
    assert first.computed == 4  # 2 queries x (basic, pe@4)
    # --refs 10: basic cells are reused (PE settings do not change them), PE cells are new
    sweep = run_study(
        StudyPlan(queries=queries, llms=["offline"], refs=[4, 10]),
        settings,
        out,
        pipeline_factory=factory(scorer),
    )
    assert (sweep.computed, sweep.skipped) == (2, 4)
    rows = study_rows(sweep.store_path, sweep.keys)
    assert sorted({(r["mode"], r["refs"]) for r in rows}, key=str) == [
        ("basic", None),
        ("pe", 10),
        ("pe", 4),
    ]
    assert {r["refs_shown"] for r in rows if r["refs"] == 10} == {10}
    assert {r["refs_shown"] for r in rows if r["refs"] == 4} == {4}
    # the report says what the offline stand-in actually read (titles of at most 15 popular)
    pe_dir = Path(next(r["run_dir"] for r in rows if r["refs"] == 10))
    shown = json.loads((pe_dir / "record.json").read_text())["enhancement"]["shown"]
    report = (pe_dir / "report.html").read_text()
    assert "No LLM read them" in report and "The LLM studied" not in report
    assert (
        f"used only the titles of the {min(shown['popular'], 15)} nearest popular "
        f"and the {shown['unpopular']} unpopular ones"
    ) in report
    # a setting that changes results (sampling) makes new cells for every arm
    hotter = settings.model_copy(update={"temperature": 1.1})
    again = run_study(
        StudyPlan(queries=queries, llms=["offline"]), hotter, out, pipeline_factory=factory(scorer)
    )
    assert again.computed == 4 and again.skipped == 0
    # rendering into a folder made with --no-render computes new cells
    rendered = run_study(
        StudyPlan(queries=queries, llms=["offline"], modes=["basic"]),
        settings.model_copy(update={"render": True}),
        out,
        pipeline_factory=factory(scorer),
    )
    assert rendered.computed == 2
    # the whole store mixes several groups of settings: a summary of "everything" refuses
    with pytest.raises(ConfigError, match="incompatible groups"):
        study_rows(out / "store.sqlite")


def test_identity_covers_result_settings_and_skips_the_rest(tmp_path):
    base = Settings.resolve(env={}, mode="pe")
    ident = lambda s: cell_identity(s, llm_model="m", predictor=None, corpus_sha256="c")  # noqa: E731
    for change in (
        {"n_refs": 10},
        {"ratio": 0.3},
        {"embedder": "tfidf"},
        {"pe_pool": "reference"},
        {"category_match": "name"},
        {"top_p": 0.5},
        {"llm_model": "x"},
        {"image": "sd"},
        {"video_options": {"steps": "4"}},
        {"render": False},
    ):
        assert ident(base) != ident(base.model_copy(update=change)), change
    for change in (
        {"out_dir": tmp_path},
        {"cache_dir": tmp_path},
        {"llm_timeout": 5.0},
        {"llm_deadline": 30.0},
        {"package": True},
    ):
        assert ident(base) == ident(base.model_copy(update=change)), change
    basic = base.model_copy(update={"mode": "basic"})
    assert ident(basic) == ident(basic.model_copy(update={"n_refs": 10}))
    assert ident(basic) != cell_identity(
        basic, llm_model="m", predictor={"name": "judge"}, corpus_sha256="c"
    )
    assert ident(basic) != cell_identity(basic, llm_model="m", predictor=None, corpus_sha256="d")


def fake_llm_study(data_dir, tmp_path, replies, **settings):
    """The two concrete queries, basic mode, through a FakeLLM answering ``replies``;
    returns (the run, its settings, its plan)."""
    settings = Settings.resolve(env={}, render=False, **settings)
    plan = StudyPlan(queries=load_queries(data_dir, ["concrete"]), llms=["fake"], modes=["basic"])
    run = run_study(
        plan,
        settings,
        tmp_path / "s",
        pipeline_factory=factory(TitleLengthScorer(), FakeLLM(replies)),
    )
    return run, settings, plan


def test_failed_cells_are_recorded_and_retried(data_dir, tmp_path):
    good = json.dumps({"title": "Good", "cover_prompt": "c", "video_prompt": "v"})
    run, settings, plan = fake_llm_study(data_dir, tmp_path, ["junk", good], max_attempts=1)
    rows = study_rows(run.store_path, run.keys)
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert "no valid idea" in rows[0]["error"]
    kept = run_study(
        plan,
        settings,
        tmp_path / "s",
        retry_failed=False,
        pipeline_factory=factory(TitleLengthScorer(), FakeLLM([])),
    )
    assert kept.computed == 0
    run_study(
        plan,
        settings,
        tmp_path / "s",
        pipeline_factory=factory(TitleLengthScorer(), FakeLLM([good])),
    )
    assert all(r["status"] == "ok" for r in study_rows(run.store_path, run.keys))


def test_setup_errors_stop_the_study(data_dir, tmp_path):
    from llmpopcorn.core.errors import UnknownBackendError

    plan = StudyPlan(queries=load_queries(data_dir), llms=["no-such-llm"], modes=["basic"])
    with pytest.raises(UnknownBackendError):
        run_study(
            plan,
            Settings.resolve(env={}, render=False),
            tmp_path / "s",
            pipeline_factory=factory(TitleLengthScorer()),
        )


def test_disk_full_during_a_cell_leaves_a_consistent_store(data_dir, tmp_path, monkeypatch):
    """Reproduction 3 of issue 9: a full disk while a run is saved used to leave the
    cell 'running' forever. Now the cell is 'failed' with the cause, the study stops with
    a clear error, and a rerun finishes it."""
    import llmpopcorn.pipeline.core as pipeline_module  # where a cell's report is saved

    real = pipeline_module.save_report

    def full(record, run_dir):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline_module, "save_report", full)
    settings = Settings.resolve(env={}, render=False)
    plan = StudyPlan(
        queries=load_queries(data_dir, ["concrete"]), llms=["offline"], modes=["basic"]
    )
    with pytest.raises(PopcornError, match="disk is full") as info:
        run_study(plan, settings, tmp_path / "s", pipeline_factory=factory(TitleLengthScorer()))
    assert "rerun" in info.value.hint
    with Store(tmp_path / "s" / "store.sqlite") as store:
        items = store.items(kind=CELL)
    assert [(i["status"], i["error"][:9]) for i in items] == [("failed", "disk full")]
    monkeypatch.setattr(pipeline_module, "save_report", real)
    run = run_study(plan, settings, tmp_path / "s", pipeline_factory=factory(TitleLengthScorer()))
    assert [r["status"] for r in study_rows(run.store_path, run.keys)] == ["ok", "ok"]


def invoke(args, env=None):
    from llmpopcorn.cli import main

    return CliRunner().invoke(main, ["bench", *args], env={"POPCORN_SCORE": "false", **(env or {})})


def test_cli_env_render_false_is_honoured_and_outputs_say_no_llm(data_dir, tmp_path):
    out = tmp_path / "study"
    args = ["--data", str(data_dir), "--mode", "basic", "--limit", "1", "--out", str(out)]
    result = invoke(
        [*args, "--seeds", "1,2", "--baseline-k", "0", "--json"], {"POPCORN_RENDER": "false"}
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["total"] == 4 and summary["ok"] == 4
    assert summary["settings"]["render"] is False
    # the study asks the paper's three fields unless told otherwise (--post-text)
    assert summary["settings"]["post_text"] is False
    assert summary["study_defaults_applied"]["post_text"] is False
    assert not list(out.glob("runs/*/clip.mp4")) and list(out.glob("runs/*/record.json"))
    assert "NO LLM WAS USED in 4 of 4" in summary["banner"]
    for name in ("summary.md", "summary.html"):
        assert "NO LLM WAS USED" in (out / name).read_text()
    with open(out / "results.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["is_llm"], r["ideator"], r["ideator_model"]) for r in rows} == {
        ("False", "offline", "offline-composer-v4")
    }
    bad = invoke([*args, "--seeds", "a,b"])
    assert bad.exit_code == 2 and "--seeds must be integers" in bad.stderr
    bad = invoke([*args, "--refs", "0,10"])
    assert bad.exit_code == 2 and "--refs values must be at least 1" in bad.stderr


def test_cli_corrupt_store_is_an_error_with_a_hint(data_dir, tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    (out / "store.sqlite").write_bytes(b"not a database at all" * 10)
    result = invoke(["--data", str(data_dir), "--mode", "basic", "--limit", "1", "--out", str(out)])
    assert result.exit_code == 2
    assert "store.sqlite" in result.stderr and "hint:" in result.stderr and "mv " in result.stderr
    assert "Traceback" not in result.output
    assert (out / "store.sqlite").read_bytes() == b"not a database at all" * 10


class MeetingScorer(TitleLengthScorer):
    """Each process's first score waits at a barrier shared by both processes: both are
    then mid-study together, whatever the load (a 0.1 s sleep made it likely only, and a
    busy machine let one process finish before the other started)."""

    def __init__(self, meet):
        super().__init__()
        self.meet, self.met = meet, False

    def score(self, idea, **kw):
        if not self.met:
            self.met = True
            self.meet.wait(120)
        return super().score(idea, **kw)


def _study_process(data_dir, out, queue, start, meet):
    start.wait(30)
    settings = Settings.resolve(env={}, render=False)
    plan = StudyPlan(queries=load_queries(data_dir), llms=["offline"], seeds=[1, 2, 3])
    run = run_study(
        StudyPlan(queries=plan.queries, llms=plan.llms, modes=["basic"], seeds=plan.seeds),
        settings,
        out,
        pipeline_factory=factory(MeetingScorer(meet)),
    )
    queue.put((run.computed, run.skipped, run.busy))


def test_two_study_processes_on_one_folder_never_duplicate_work(data_dir, tmp_path):
    """Reproduction 3 of issue 9: two `popcorn bench` on one folder made 475 run folders
    for 240 cells. Now each cell is claimed by exactly one process."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    out = tmp_path / "study"
    start, meet = ctx.Event(), ctx.Barrier(2)
    procs = [
        ctx.Process(target=_study_process, args=(data_dir, out, queue, start, meet))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    start.set()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sum(r[0] for r in results) == 12  # 4 queries x 3 seeds, each computed once
    assert min(r[0] for r in results) >= 1  # both really worked at the same time
    assert len(list((out / "runs").iterdir())) == 12
    with Store(out / "store.sqlite") as store:
        items = store.items(kind=CELL)
    assert len(items) == 12 and {(i["status"], i["attempts"]) for i in items} == {("ok", 1)}


def test_study_defaults_never_override_a_flag_env_or_config(tmp_path, monkeypatch):
    from llmpopcorn.cli.bench import study_settings

    settings, applied = study_settings({})
    assert settings.pe_pool == "reference" and applied["pe_pool"] == "reference"
    assert settings.predictor == applied["predictor"] == "judge"  # shipped in models/judge
    monkeypatch.setenv("POPCORN_PREDICTOR", "default")
    settings, applied = study_settings({})
    assert settings.predictor == "default" and "predictor" not in applied
    monkeypatch.delenv("POPCORN_PREDICTOR")
    monkeypatch.setenv("POPCORN_PE_POOL", "all")
    settings, applied = study_settings({})
    assert settings.pe_pool == "all" and "pe_pool" not in applied
    monkeypatch.delenv("POPCORN_PE_POOL")
    config = tmp_path / "c.toml"
    config.write_text('pe_pool = "all"\nrender = false\n')
    settings, applied = study_settings({"_config": str(config)})
    assert (settings.pe_pool, settings.render) == ("all", False) and "pe_pool" not in applied
    settings, _ = study_settings({"pe_pool": "all"})
    assert settings.pe_pool == "all"
    monkeypatch.setenv("POPCORN_RENDER", "false")
    assert study_settings({}, render=None)[0].render is False
    assert study_settings({}, render=True)[0].render is True  # an explicit flag wins


def test_study_cells_ask_the_llm_concurrently_each_cell_once(data_dir, tmp_path):
    """`popcorn bench -k K` runs K cells' LLM calls at once (the study uses the batch's
    executors), and no cell is asked twice."""
    import threading

    from fake_openai_server import FakeOpenAIServer, completion

    lock, active, peak, asked = threading.Lock(), [0], [0], []
    pair = threading.Barrier(2)  # the first two calls meet: two in flight at once, surely

    def slow(body):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            asked.append((body["messages"][-1]["content"], body.get("seed")))
            first_two = len(asked) <= 2
        if first_two:
            pair.wait(120)
        with lock:
            active[0] -= 1
        reply = {"title": f"Idea {len(asked)}", "cover_prompt": "c", "video_prompt": "v"}
        return 200, completion(json.dumps(reply))

    with FakeOpenAIServer(responder=slow) as server:
        settings = Settings.resolve(
            env={},
            render=False,
            score=False,
            llm="openai",
            llm_base_url=server.url,
            llm_model="test-model",
            llm_api_key="sk-test",
        )
        plan = StudyPlan(queries=load_queries(data_dir), llms=["openai"], modes=["basic"])
        run = run_study(plan, settings, tmp_path / "s", concurrency=4)
    rows = study_rows(run.store_path, run.keys)
    assert [r["status"] for r in rows] == ["ok"] * 4 and run.computed == 4
    assert len(asked) == len(set(asked)) == 4
    assert peak[0] >= 2  # one cell at a time would never overlap two requests
    assert {r["is_llm"] for r in rows} == {True}


def test_an_interrupted_study_gives_its_cells_back_and_a_rerun_finishes(data_dir, tmp_path):
    """Ctrl-C (or SIGTERM, turned into an interrupt) leaves no cell 'running' or
    'failed': the cells this process held are pending again, and a rerun computes
    exactly the ones not finished."""
    settings = Settings.resolve(env={}, render=False)
    plan = StudyPlan(queries=load_queries(data_dir), llms=["offline"], modes=["basic"])
    ended = []

    def stop_after_one(key, arm, status):
        ended.append(status)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(
            plan,
            settings,
            tmp_path / "s",
            pipeline_factory=factory(TitleLengthScorer()),
            on_cell=stop_after_one,
        )
    with Store(tmp_path / "s" / "store.sqlite") as store:
        items = store.items(kind=CELL)
    statuses = sorted(i["status"] for i in items)
    assert statuses.count("ok") == 1 and set(statuses) <= {"ok", "pending"}
    again = run_study(plan, settings, tmp_path / "s", pipeline_factory=factory(TitleLengthScorer()))
    assert (again.computed, again.skipped) == (3, 1)
    assert [r["status"] for r in study_rows(again.store_path, again.keys)] == ["ok"] * 4


def test_results_csv_defuses_formula_titles_and_json_keeps_them(data_dir, tmp_path):
    from llmpopcorn.study.report import write_reports

    evil = json.dumps({"title": "=1+2 surprise", "cover_prompt": "c", "video_prompt": "v"})
    run, _, _ = fake_llm_study(data_dir, tmp_path, [evil, evil])
    rows = study_rows(run.store_path, run.keys)
    assert {r["title"] for r in rows} == {"=1+2 surprise"}  # the store keeps the text
    write_reports(rows, tmp_path / "s", plots=False, n_boot=10)
    with open(tmp_path / "s" / "results.csv", encoding="utf-8") as fh:
        assert {r["title"] for r in csv.DictReader(fh)} == {"'=1+2 surprise"}


def test_a_study_over_its_hosted_cost_cap_is_refused_before_any_cell(
    data_dir, tmp_path, monkeypatch
):
    from llmpopcorn.backends.hosted.errors import CostLimitError

    monkeypatch.setenv("FAL_KEY", "fal-test-key")  # never used: nothing is called

    settings = Settings.resolve(
        env={}, image="fal-flux", video="fal-kling", max_batch_cost=1.0, score=False
    )
    plan = StudyPlan(
        queries=load_queries(data_dir), llms=["offline"], modes=["basic"], videos=["fal-kling"]
    )
    with pytest.raises(CostLimitError, match="4 runs would cost"):
        run_study(plan, settings, tmp_path / "s")
    with Store(tmp_path / "s" / "store.sqlite") as store:
        assert store.items(kind=CELL) == []


def test_cli_interrupt_says_how_to_continue(data_dir, tmp_path, monkeypatch):
    import llmpopcorn.cli.bench as cli_bench

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_bench, "run_study", interrupted)
    result = invoke(["--data", str(data_dir), "--limit", "1", "--out", str(tmp_path / "s")])
    assert result.exit_code == 130
    assert "error: interrupted" in result.stderr
    assert "rerun the same command to compute the rest" in result.stderr


def test_runs_list_on_a_study_folder_points_to_its_summary(data_dir, tmp_path):
    from llmpopcorn.cli import main

    settings = Settings.resolve(env={}, render=False)
    plan = StudyPlan(queries=load_queries(data_dir), llms=["offline"], modes=["basic"])
    run_study(plan, settings, tmp_path / "s", pipeline_factory=factory(TitleLengthScorer()))
    listed = CliRunner().invoke(main, ["runs", "list", "--out", str(tmp_path / "s")])
    assert listed.exit_code == 0
    assert "no batches yet; this store holds 4 study cell(s) in 1 group(s)" in listed.stderr
    assert "summary.md" in listed.stderr


def test_render_workers_are_sized_from_the_arm_that_renders_on_a_gpu(
    data_dir, tmp_path, monkeypatch
):
    """`popcorn bench --video draft --video ltx` on a CUDA machine: the base settings name
    the draft renderer, but the ltx arm renders on the GPUs, so the render pool gets one
    slot per GPU and Ray's render workers ask for a GPU (simulated: 2 CUDA devices)."""
    import importlib.machinery
    import sys
    import types

    from llmpopcorn.runs import driver
    from llmpopcorn.runs.executors import LocalExecutor

    fake_torch = types.ModuleType("torch")
    fake_torch.__spec__ = importlib.machinery.ModuleSpec("torch", None)
    fake_torch.cuda = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 2)
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    seen = {}

    class Records(LocalExecutor):
        def start(self, spec, slots, *, render):
            seen["slots"] = slots
            raise KeyboardInterrupt  # stop before any model is built

    made = []
    real = driver.make_executor
    monkeypatch.setattr(driver, "make_executor", lambda *a, **kw: made.append(kw) or real("local"))
    settings = Settings.resolve(env={}, score=False)
    plan = StudyPlan(
        queries=load_queries(data_dir), llms=["offline"], modes=["basic"], videos=["draft", "ltx"]
    )
    with pytest.raises(KeyboardInterrupt):
        run_study(plan, settings, tmp_path / "s", executor=Records())
    assert seen["slots"].render == 2
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(LocalExecutor, "start", Records.start)
        run_study(plan, settings, tmp_path / "s2", executor="local")
    assert made == [{"address": None, "gpu_render": True}]
