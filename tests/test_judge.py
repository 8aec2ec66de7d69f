"""The judge (issue 16): it scores only what it learned, one category per run, PE's
references independent of it when asked, created through the registry, and the
layering rules the judge work relies on."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from llmpopcorn.core.registry import Registry
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import Idea, Reference, Score
from llmpopcorn.corpus.partition import in_part, part_of
from llmpopcorn.pipeline.core import Pipeline, judge_overlap
from llmpopcorn.predict import load_scorer
from pe_fixtures import write_corpus

SRC = Path(__file__).resolve().parent.parent / "src" / "llmpopcorn"


@pytest.fixture(scope="module")
def scorer():
    """The shipped model (title + category), loaded once for the module."""
    return load_scorer(Settings.resolve(env={}))


def test_the_shipped_model_declares_what_it_learned(scorer):
    assert scorer.inputs["text_fields"] == ["title"] and scorer.inputs["category"]


def test_fields_the_model_never_learned_do_not_move_the_score(scorer):
    title = "A corgi learns to surf on a giant wave"
    a = scorer.score_text(
        title, "a corgi on a surfboard, golden hour", "the corgi rides", category="Animal"
    )
    b = scorer.score_text(
        title, "neon city skyline, rain", "a chef flips an omelette", category="Animal"
    )
    c = scorer.score_text(title, "", "", category="Animal")
    assert a.log2_comments == b.log2_comments == c.log2_comments
    assert a.extra["inputs"]["fields"] == {"title": title}
    assert set(a.extra["inputs"]["not_read"]) == {"cover_prompt", "video_prompt"}


def test_the_title_and_the_category_do_move_it(scorer):
    base = scorer.score_text("A corgi learns to surf on a giant wave", category="Animal")
    other_title = scorer.score_text("Top 10 boss fights of the year ranked", category="Animal")
    other_category = scorer.score_text("A corgi learns to surf on a giant wave", category="Game")
    assert other_title.log2_comments != base.log2_comments
    assert other_category.log2_comments != base.log2_comments


def test_one_category_per_run_used_by_the_score(scorer, out_dir):
    query = "a golden retriever puppy meets a kitten"
    expected = scorer.resolve_category(query)
    assert expected == "Animal"
    settings = Settings.resolve(env={}, out_dir=out_dir, render=False)
    record = Pipeline(settings, scorer=scorer).make(query)
    assert record.category["name"] == expected == record.score.category
    assert record.score.extra["inputs"]["category_source"] == "given"
    html = (Path(record.run_dir) / "report.html").read_text(encoding="utf-8")
    assert f"Category: <b>{expected}</b>" in html and "it read: title, category" in html
    # scoring the same text directly resolves the same category
    direct = scorer.score_text(query)
    assert direct.category == expected and direct.extra["inputs"]["category_source"].endswith(
        "title"
    )


def pe_settings(tmp_path) -> Settings:
    """PE on the fixture corpus (TF-IDF), five references, no rendering."""
    return Settings.resolve(
        env={},
        mode="pe",
        data_dir=write_corpus(tmp_path / "data"),
        embedder="tfidf",
        cache_dir=tmp_path / "cache",
        out_dir=tmp_path / "runs",
        n_refs=5,
        render=False,
    )


def test_pe_runs_score_in_pe_s_category(scorer, tmp_path):
    settings = pe_settings(tmp_path)
    pipeline = Pipeline(settings, scorer=scorer)
    record = pipeline.make("crispy fried chicken with dumplings")
    pe_choice = record.enhancement["categories"][0]["name"]
    assert pe_choice == "Delicacy" == scorer.resolve_category("crispy fried chicken with dumplings")
    assert record.category["name"] == pe_choice == record.score.category
    assert record.enhancement["matcher"]["source"] == "the run's resolver"
    # `popcorn prompt` (Pipeline.prompt) makes the same choice as make
    assert (
        pipeline.prompt("crispy fried chicken with dumplings").settings["categories"][0]["name"]
        == pe_choice
    )


class MemoryScorer:
    """A fake judge that remembers a given set of videos."""

    name = "memory-fake"
    part = "judge"

    def __init__(self, ids):
        self.ids = list(ids)

    def memory_ids(self):
        return self.ids


def _refs(ids):
    return [Reference(video_id=str(i), title=f"t{i}", label="popular") for i in ids]


def test_overlap_counts_references_in_memory_and_among_the_neighbours():
    ids = [str(i) for i in range(1, 201)]
    judge = [i for i in ids if part_of(i) == "judge"]
    reference = [i for i in ids if part_of(i) == "reference"]
    score = Score(
        predictor="x",
        log2_comments=1.0,
        expected_comments=2.0,
        neighbours=_refs(reference[:2] + judge[:3]),
    )
    independent = judge_overlap(MemoryScorer(judge), _refs(reference[:10]), score)
    assert independent["references_in_judge_memory"] == 0
    assert independent["neighbours_that_are_references"] == 2
    leaky = judge_overlap(MemoryScorer(ids), _refs(reference[:10] + judge[:5]), score)
    assert leaky["references_in_judge_memory"] == 15 and leaky["references"] == 15
    assert leaky["neighbours_that_are_references"] == 5


def test_reference_pool_has_zero_overlap_with_a_judge_part_memory(tmp_path, out_dir):
    data = write_corpus(tmp_path / "data")
    from llmpopcorn.corpus.table import load_corpus

    frame = load_corpus(data).frame
    judge_ids = frame["video_id"][in_part(frame["video_id"], "judge")].tolist()

    class Judge(MemoryScorer):
        def score(self, idea, *, query=None, clip_path=None, category=""):
            return Score(predictor=self.name, log2_comments=1.0, expected_comments=2.0)

    def run(pool):
        settings = Settings.resolve(
            env={},
            mode="pe",
            data_dir=data,
            embedder="tfidf",
            cache_dir=tmp_path / "cache",
            out_dir=out_dir,
            n_refs=10,
            num_tags=4,
            pe_pool=pool,
            render=False,
        )
        record = Pipeline(settings, scorer=Judge(judge_ids)).make("a game boss fight")
        return record.score.extra["independence"], record

    independent, record = run("reference")
    assert independent["references"] == 10 and independent["references_in_judge_memory"] == 0
    assert record.enhancement["pool"]["part"] == "reference"
    assert not any(n.startswith("Judge independence") for n in record.notes)
    leaky, record = run("all")
    assert leaky["references_in_judge_memory"] > 0
    assert any(n.startswith("Judge independence") for n in record.notes)


def test_a_plugin_predictor_is_created_through_the_registry(out_dir):
    calls = []

    class PluginJudge:
        name = "plugin-judge"

        @classmethod
        def from_settings(cls, settings):
            calls.append(settings.predictor)
            return cls()

        def score(self, idea, *, query=None, clip_path=None, category=""):
            return Score(predictor=self.name, log2_comments=3.0, expected_comments=8.0)

    registry = Registry()
    registry.add("predictor", "plugin-judge", PluginJudge)
    settings = Settings.resolve(env={}, out_dir=out_dir, render=False, predictor="plugin-judge")
    record = Pipeline(settings, registry=registry).make("a corgi learns to surf")
    assert calls == ["plugin-judge"] and record.score.predictor == "plugin-judge"
    assert record.backends["predictor"].name == "plugin-judge"


def test_a_broken_model_fails_before_the_llm_and_the_renderers_run(tmp_path, out_dir):
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "config.json").write_text('{"format": 1, "model": "mmra", "params": {}}')
    (bad / "weights.npz").write_bytes(b"")
    settings = Settings.resolve(env={}, out_dir=out_dir, predictor=str(bad))
    with pytest.raises(Exception):  # noqa: B017 - the loader's own error type is tested elsewhere
        Pipeline(settings).make("a corgi learns to surf")
    record_path = next(out_dir.glob("*/record.json"))
    text = record_path.read_text()
    assert '"idea": null' in text and "cover.png" not in text


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add("." * node.level + node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_layering_backends_import_no_stage_and_web_imports_no_cli():
    stages = ("enhance", "pipeline", "ideate", "bench")
    for path in (SRC / "backends").rglob("*.py"):
        for module in _imports(path):
            last = module.lstrip(".").split(".")[-1]
            assert last not in stages, f"{path.relative_to(SRC)} imports the stage {module}"
    for path in (SRC / "web").rglob("*.py"):
        for module in _imports(path):
            assert "cli" not in module.lstrip(".").split("."), f"{path.name} imports {module}"


def test_idea_fields_are_mapped_explicitly(scorer):
    idea = Idea(title="Grandma's secret dumplings", cover_prompt="x", video_prompt="y")
    text, used, missing = scorer.input_text(idea.model_dump())
    assert text == "Grandma's secret dumplings" and used == {"title": idea.title}
    assert missing == []


def test_a_record_says_ok_only_when_its_report_was_written(out_dir, monkeypatch):
    import llmpopcorn.pipeline.core as pipeline_module

    def disk_full(record, run_dir):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline_module, "save_report", disk_full)
    settings = Settings.resolve(env={}, out_dir=out_dir, render=False, score=False)
    with pytest.raises(OSError, match="No space"):
        Pipeline(settings).make("a corgi learns to surf")
    record = next(out_dir.glob("*/record.json")).read_text()
    assert '"status": "failed"' in record and "could not write report.html" in record


def test_batch_items_use_the_run_s_category_resolver_as_make_does(scorer, tmp_path):
    """A batch item's prompt and category come from the same resolver as `popcorn make`
    (the judge's ranking handed to PE), not PE's own index."""
    import json

    from llmpopcorn.runs.batch import run_batch

    settings = pe_settings(tmp_path)
    query = "crispy fried chicken with dumplings"
    made = Pipeline(settings, scorer=scorer).make(query)
    run = run_batch(
        [query], settings, out_dir=tmp_path / "batch", pipeline=Pipeline(settings, scorer=scorer)
    )
    (folder,) = [p for p in (run.runs_dir / run.batch_id).iterdir() if p.is_dir()]
    record = json.loads((folder / "record.json").read_text(encoding="utf-8"))
    assert record["enhancement"]["matcher"]["source"] == "the run's resolver"
    assert record["category"] == made.category
    assert record["category"]["source"].startswith("the judge's category resolver")
    assert record["score"]["category"] == made.score.category == "Delicacy"
