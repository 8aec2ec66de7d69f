"""Executors (issue 11): the local pools, and the Ray executor on a local Ray started by
the test (num_cpus=2) giving the same results as the local one for the same seeds."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from llmpopcorn.core.settings import Settings
from llmpopcorn.runs.batch import batch_rows, run_batch
from llmpopcorn.runs.executors import DaemonPool, LocalExecutor, Slots, WorkerSpec
from llmpopcorn.runs.store import Store

QUERIES = ["a corgi learns to surf", "pasta in three steps", "sunset over tokyo"]


def test_daemon_pool_runs_at_most_its_size_at_once_and_hands_back_errors():
    pool = DaemonPool(3, "t")
    lock, running, peak = threading.Lock(), [0], [0]
    # the first three meet at a barrier: 3 at once is then certain (a sleep made it
    # likely, and a busy machine ran them one after another); a 4th could only start
    # meanwhile if the pool ran more than 3, which the peak would show
    together = threading.Barrier(3)

    def job(x):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if x < 3:
            together.wait(60)
        with lock:
            running[0] -= 1
        if x == 4:
            raise ValueError("four")
        return x * 2

    futures = [pool.submit(job, i) for i in range(9)]
    assert [f.result() for i, f in enumerate(futures) if i != 4] == [
        i * 2 for i in range(9) if i != 4
    ]
    with pytest.raises(ValueError, match="four"):
        futures[4].result()
    assert peak[0] == 3
    assert all(t.daemon for t in pool._threads)  # Ctrl-C never waits for them
    pool.shutdown()


class EchoWorker:
    def __init__(self):
        self.warmed = 0

    def warm(self):
        self.warmed += 1

    def ideate(self, payload):
        return {"stage": "ideate", **payload}

    def score(self, payload):
        return {"stage": "score", **payload}


def test_local_executor_routes_stages_to_one_warmed_worker():
    executor = LocalExecutor()
    worker = EchoWorker()
    executor.start(WorkerSpec(EchoWorker, local=worker), Slots(ideate=2), render=True)
    handles = [executor.submit("ideate", {"n": 1}), executor.submit("score", {"n": 2})]
    done: list = []
    while len(done) < 2:
        done += executor.wait([h for h in handles if h not in done], timeout=1)
    assert sorted((executor.result(h)["stage"], executor.result(h)["n"]) for h in done) == [
        ("ideate", 1),
        ("score", 2),
    ]
    assert worker.warmed == 1
    executor.shutdown()


def _rows(run) -> list[tuple]:
    with Store(run.store_path) as store:
        return [
            (r["query"], r["variant"], r["seed"], r["status"], r["title"])
            for r in batch_rows(store, run.batch_id)
        ]


def test_ray_executor_gives_the_local_results(tmp_path):
    pytest.importorskip("ray")
    from llmpopcorn.runs.executors import RayExecutor

    settings = Settings(render=False, score=False)  # offline composer: deterministic
    local = run_batch(QUERIES, settings, out_dir=tmp_path / "local", variants=2)
    ray_run = run_batch(
        QUERIES,
        settings,
        out_dir=tmp_path / "ray",
        variants=2,
        concurrency=4,
        executor=RayExecutor(num_cpus=2),
    )
    assert ray_run.executor["executor"] == "ray"
    assert ray_run.batch_id == local.batch_id  # the executor is not part of the identity
    assert _rows(ray_run) == _rows(local)
    assert len({r[4] for r in _rows(ray_run)}) == 6  # every variant its own title
    folders = list((tmp_path / "ray" / ray_run.batch_id).iterdir())
    assert len(folders) == 6 and all((f / "record.json").exists() for f in folders)


class DiesOnceWorker:
    """Kills its own process on the first ideate call (a lost worker); Ray restarts the
    actor and retries the task."""

    def __init__(self, marker: str, **kwargs):
        from llmpopcorn.runs.worker import ItemWorker

        self.marker = Path(marker)
        self.inner = ItemWorker(**kwargs)

    def warm(self):
        self.inner.warm()

    def _maybe_die(self):
        if not self.marker.exists():
            self.marker.write_text("died")
            os._exit(1)

    def ideate(self, task):
        self._maybe_die()
        return self.inner.ideate(task)

    def ideate_score(self, task):
        self._maybe_die()
        return self.inner.ideate_score(task)

    def render(self, state):
        return self.inner.render(state)

    def score(self, state):
        return self.inner.score(state)


@pytest.mark.slow
def test_ray_retries_a_task_whose_worker_died(tmp_path):
    pytest.importorskip("ray")
    from llmpopcorn.runs import batch as batch_module
    from llmpopcorn.runs.executors import RayExecutor

    marker = tmp_path / "died"
    settings = Settings(render=False, score=False)
    original = batch_module.WorkerSpec

    def spec(cls, kwargs=None, local=None):  # the test's worker, same arguments
        return original(DiesOnceWorker, {"marker": str(marker), **(kwargs or {})}, local)

    batch_module.WorkerSpec = spec
    try:
        executor = RayExecutor(
            num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}}
        )
        run = run_batch(QUERIES, settings, out_dir=tmp_path / "ray", executor=executor)
    finally:
        batch_module.WorkerSpec = original
    assert marker.exists()  # a worker did die
    assert run.progress.done == 3 and run.progress.failed == 0


def test_the_study_on_ray_gives_the_local_results(tmp_path):
    """`popcorn bench` runs on the same executors: a study through a local Ray (arms in
    turn, cells as tasks on actors) stores the same cells as the local executor."""
    pytest.importorskip("ray")
    from llmpopcorn.runs.executors import RayExecutor
    from llmpopcorn.study.bench import BenchQuery, StudyPlan, run_study, study_rows
    from pe_fixtures import write_corpus

    settings = Settings(
        render=False,
        score=False,
        data_dir=write_corpus(tmp_path / "data"),
        embedder="tfidf",
        cache_dir=tmp_path / "cache",
        min_category_size=1,
        n_refs=4,
    )
    queries = [BenchQuery(f"concrete-{i:03d}", "concrete", q) for i, q in enumerate(QUERIES, 1)]
    plan = StudyPlan(queries=queries, llms=["offline"], seeds=[1, 2])

    def rows(run):
        return [
            (r["query_id"], r["mode"], r["seed"], r["status"], r["title"], r["refs_shown"])
            for r in study_rows(run.store_path, run.keys)
        ]

    local = run_study(plan, settings, tmp_path / "local", concurrency=2)
    on_ray = run_study(
        plan, settings, tmp_path / "ray", concurrency=4, executor=RayExecutor(num_cpus=2)
    )
    assert on_ray.executor["executor"] == "ray" and local.executor["executor"] == "local"
    assert on_ray.keys == local.keys and on_ray.computed == local.computed == 12
    assert rows(on_ray) == rows(local)
    assert {r[3] for r in rows(local)} == {"ok"} and {r[5] for r in rows(local)} == {0, 4}
    folders = list((tmp_path / "ray" / "runs").iterdir())
    assert len(folders) == 12 and all((f / "record.json").exists() for f in folders)
    assert not (tmp_path / "ray" / ".staging").exists()


def test_an_unreachable_ray_cluster_is_a_clear_error(tmp_path):
    """`--address auto` with no cluster running: exit 2 with the address and what to
    check (token authentication included), no traceback."""
    pytest.importorskip("ray")
    import subprocess
    import sys

    queries = tmp_path / "q.txt"
    queries.write_text("a corgi learns to surf\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    result = subprocess.run(
        [sys.executable, "-c", "from llmpopcorn.cli import main; main()", "batch", str(queries),
         "--no-render", "--no-score", "--executor", "ray", "--address", "auto",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env={**env, "HOME": str(tmp_path)}, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error: cannot connect to the Ray cluster at auto" in result.stderr
    assert "RAY_AUTH_MODE=token" in result.stderr and "Traceback" not in result.stderr
