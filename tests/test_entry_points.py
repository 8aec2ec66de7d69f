"""One pipeline: the same query and seed through `popcorn make` (Pipeline.make), a batch
item, a study cell and a web job give the same record (ids, times and folders aside)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fakes import TitleLengthScorer, draft_pipeline
from llmpopcorn.core.settings import Settings
from llmpopcorn.runs.batch import run_batch
from llmpopcorn.study.bench import BenchQuery, StudyPlan, run_study
from pe_fixtures import write_corpus

QUERY = "a corgi learns to surf"
SEED = 7
#: what may differ between entry points: identity, clock and where the folder is
VOLATILE = {"run_id", "created", "finished", "run_dir", "timings"}
#: folders: the studio's records show "<data>" / "<cache>" instead of server paths
FOLDERS = {"out_dir", "data_dir", "cache_dir"}


def comparable(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    out["settings"] = {k: v for k, v in record["settings"].items() if k not in FOLDERS}
    out["attempts"] = [{k: v for k, v in a.items() if k != "seconds"} for a in record["attempts"]]
    return out


def factory(settings: Settings):
    return draft_pipeline(settings, scorer=TitleLengthScorer())


@pytest.fixture(params=["basic", "pe"])
def settings(request, tmp_path) -> Settings:
    pe = {}
    if request.param == "pe":  # a small corpus, TF-IDF retrieval: PE's references too
        pe = dict(
            data_dir=write_corpus(tmp_path / "data"),
            embedder="tfidf",
            cache_dir=tmp_path / "cache",
            min_category_size=1,
            n_refs=4,
        )
    return Settings.resolve(env={}, out_dir=tmp_path / "made", seed=SEED, mode=request.param, **pe)


def made(settings) -> dict:
    record = factory(settings).make(QUERY)
    assert record.status == "ok"
    return json.loads((Path(record.run_dir) / "record.json").read_text(encoding="utf-8"))


def batched(settings, out: Path) -> dict:
    run = run_batch([QUERY], settings, out_dir=out, pipeline=factory(settings), concurrency=1)
    (folder,) = [p for p in (run.runs_dir / run.batch_id).iterdir() if p.is_dir()]
    return json.loads((folder / "record.json").read_text(encoding="utf-8"))


def studied(settings, out: Path) -> dict:
    plan = StudyPlan(
        queries=[BenchQuery("concrete-001", "concrete", QUERY)],
        llms=[settings.llm],
        modes=[settings.mode],
        videos=[settings.video],
        seeds=[SEED],
    )
    run_study(plan, settings, out, pipeline_factory=factory)
    (record,) = (out / "runs").glob("*/record.json")
    return json.loads(record.read_text(encoding="utf-8"))


def web_job(settings) -> dict:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from llmpopcorn.web.app import create_app

    app = create_app(settings, pipeline_factory=factory)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        asked = {"query": QUERY, "seed": SEED, "mode": settings.mode}
        job = client.post("/api/runs", json=asked).json()["id"]
        deadline = time.monotonic() + 120
        while (view := client.get(f"/api/runs/{job}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, "the web job never ended"
            time.sleep(0.05)
        assert view["state"] == "done", view
        return client.get(f"/api/runs/{job}/files/record.json").json()


def test_make_batch_study_and_web_give_the_same_record(settings, tmp_path):
    reference = comparable(made(settings))
    assert reference["idea"] and reference["score"] and len(reference["artifacts"]) == 2
    assert bool(reference["references"]) == (settings.mode == "pe")
    others = {
        "batch": batched(settings, tmp_path / "batch"),
        "study": studied(settings, tmp_path / "study"),
        "web": web_job(settings),
    }
    for name, record in others.items():
        got = comparable(record)
        differing = sorted(
            k for k in reference.keys() | got.keys() if reference.get(k) != got.get(k)
        )
        assert differing == [], f"{name} differs from make in {differing}"
