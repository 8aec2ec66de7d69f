"""Predictor CLI (train, eval, score), the scorer, the shipped model and the score stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from llmpopcorn.backends.media import write_mp4
from llmpopcorn.cli import main
from llmpopcorn.core.errors import MissingExtraError
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import Idea
from llmpopcorn.predict import DEFAULT_MODEL, load_scorer
from llmpopcorn.predict import embed as embed_mod
from llmpopcorn.predict.scorer import PopularityScorer
from llmpopcorn.predict.train import train_and_save
from llmpopcorn.predict.visual import clip_stats
from predict_fixtures import FakeEmbedder, synthetic_frame, write_csv

FAST = ("global-mean", "category-mean", "tfidf-ridge")


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def fake_embedder(monkeypatch):
    emb = FakeEmbedder()
    monkeypatch.setattr(embed_mod, "get_embedder", lambda name: emb)
    return emb


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    root = tmp_path_factory.mktemp("csv")
    frame = synthetic_frame(400, seed=0)
    held = synthetic_frame(120, seed=5)
    held["video_id"] = [str(10_000 + i) for i in range(len(held))]
    return write_csv(root / "train.csv", frame), write_csv(root / "held.csv", held)


@pytest.fixture(scope="module")
def knn_model(tmp_path_factory, csvs):
    """A small retrieval model trained with the fake embedder (tests the full path)."""
    from llmpopcorn.predict import train as train_mod

    root = tmp_path_factory.mktemp("model")
    params = {"mmra": {"embedder": "fake", "epochs": 6, "hidden": 32, "lr": 3e-3}}
    orig = train_mod.train_all

    def train_all(table, **kw):
        return orig(table, **{**kw, "params": params})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embed_mod, "get_embedder", lambda name: FakeEmbedder())
        mp.setattr(train_mod, "train_all", train_all)
        mp.setattr(train_mod, "embedders_for", lambda models: {"fake"})
        path, metrics = train_and_save(
            csvs[0],
            root / "m",
            model="mmra",
            models=["global-mean", "mmra"],
            cache_dir=root / "cache",
        )
    return path, metrics


def test_train_and_eval_cli_write_model_metrics_and_json(tmp_path, csvs):
    out = tmp_path / "m"
    args = ["predictor", "train", "--data", str(csvs[0]), "--out", str(out), "--seed", "3"]
    result = run(*args, *[x for name in FAST for x in ("--only", name)])
    assert result.exit_code == 0, result.output
    assert "| tfidf-ridge |" in result.stdout and "saved tfidf-ridge" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["default"] == "tfidf-ridge" and metrics["seed"] == 3
    assert set(metrics["models"]) == set(FAST)
    assert metrics["models"]["global-mean"]["test"]["src"] is None  # constant: undefined
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["data_sha256"] and config["conformal"]["level"] == 0.8

    result = run("predictor", "eval", "--model", str(out), "--data", str(csvs[1]), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("n", "nmse", "mae", "src", "nmse_batched", "src_batched", "interval_coverage"):
        assert key in report
    assert report["n"] == 120 and report["src"] > 0.8  # the planted topic words carry it

    seen = run("predictor", "eval", "--model", str(out), "--data", str(csvs[0]), "--json")
    assert json.loads(seen.stdout)["n"] == 400  # tfidf-ridge has no memory: nothing to drop


def test_train_cli_bad_data_exits_2_with_hint(tmp_path):
    bad = write_csv(tmp_path / "bad.csv", synthetic_frame(20).drop(columns=["comment_count"]))
    result = CliRunner().invoke(
        main, ["predictor", "train", "--data", str(bad), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "comment_count" in result.stderr and "hint:" in result.stderr


def test_retrieval_model_scores_ideas_with_interval_and_explanation(knn_model, csvs, fake_embedder):
    path, metrics = knn_model
    assert metrics["default"] == "mmra"
    scorer = PopularityScorer(path, data_dir=csvs[0])
    idea = Idea(title="topic7word1 topic7word2", cover_prompt="topic7word3", video_prompt="x y")
    score = scorer.score(idea, query="q")
    assert score.category == "Cat3" and score.extra["category_resolved"]
    lo, hi = score.interval
    assert lo < score.log2_comments < hi and score.interval_level == 0.8
    assert score.log2_comments > 5.5  # topic 7 is the most commented one
    assert 0 <= score.percentile <= 100
    assert len(score.neighbours) == 5 and all(n.title for n in score.neighbours)
    assert all("topic7" in n.title for n in score.neighbours[:3])
    assert len(score.extra["attention"]) == 10
    # eval on the training CSV leaves out the rows in the memory
    from llmpopcorn.predict.evaluate import evaluate_csv

    report = evaluate_csv(path, csvs[0])
    assert report["rows_in_training_data"] == 320 and report["n"] == 80


def test_score_cli_json_and_text(knn_model, csvs, fake_embedder):
    path, _ = knn_model
    args = ["score", "--title", "topic0word1 topic0word2", "--model", str(path)]
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    score = json.loads(result.stdout)
    assert score["log2_comments"] < 3 and len(score["neighbours"]) == 5
    text = run(*args, "--data", str(csvs[0]))
    assert "Interval:" in text.stdout and "Percentile:" in text.stdout and "topic0" in text.stdout


def test_missing_model_dir_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["score", "--title", "x", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "POPCORN_PREDICTOR" in result.stderr


def test_clip_stats_tell_bright_moving_from_dark_static(tmp_path):
    from llmpopcorn.backends.base import Clip

    dark = [np.full((64, 36, 3), 20, np.uint8)] * 12
    rng = np.random.default_rng(0)
    bright = [rng.integers(120, 255, (64, 36, 3), dtype=np.uint8) for _ in range(12)]
    a = clip_stats(write_mp4(Clip(dark, 12.0), tmp_path / "dark.mp4"))
    b = clip_stats(write_mp4(Clip(bright, 12.0), tmp_path / "bright.mp4"))
    assert a["brightness"] < 0.15 < b["brightness"]
    assert a["motion_energy"] < 0.01 < b["motion_energy"]
    assert a["sharpness"] < b["sharpness"] and a["colourfulness"] < b["colourfulness"]


def test_pipeline_records_not_scored_when_the_extra_is_missing(monkeypatch, out_dir):
    import llmpopcorn.predict.scorer as scorer_module
    from llmpopcorn.pipeline.core import Pipeline

    def missing(settings):
        raise MissingExtraError("sentence_transformers", "ml", "scoring")

    # the pipeline creates the scorer through the registry -> PopularityScorer.from_settings
    monkeypatch.setattr(scorer_module, "load_scorer", missing)
    record = Pipeline(Settings.resolve(out_dir=out_dir)).make("a corgi learns to surf")
    assert record.status == "ok" and record.score is None
    assert any("Not scored" in n and "llmpopcorn[ml]" in n for n in record.notes)
    assert record.visual_stats and 0 < record.visual_stats["brightness"] < 1


def test_shipped_model_is_small_and_holds_no_corpus_text():
    files = {p.name: p for p in DEFAULT_MODEL.iterdir()}
    assert {"config.json", "weights.npz", "metrics.json"} <= set(files)
    assert sum(p.stat().st_size for p in files.values()) < 25 * 1024 * 1024
    config = json.loads(files["config.json"].read_text())
    assert config["train"]["data_sha256"] and config["train"]["code_version"]
    with np.load(files["weights.npz"], allow_pickle=False) as npz:
        for key in npz.files:
            arr = npz[key]
            if arr.dtype.kind == "U":  # only ids (digits) and category names
                name = key.rpartition(".")[2]  # members of an ensemble: "<member>.<key>"
                assert name in ("memory_ids_", "categories_", "prior:categories_"), key
                if name == "memory_ids_":
                    assert all(s.isdigit() for s in arr)


def test_shipped_model_scores_an_idea():
    pytest.importorskip("sentence_transformers")
    scorer = load_scorer(Settings.resolve())
    idea = Idea(title="My cat tries the new game", cover_prompt="a cat", video_prompt="a cat")
    score = scorer.score(idea)
    assert 0 < score.log2_comments < 10 and score.interval and score.neighbours
    assert score.category


def test_knn_model_scores_with_explanation_too(tmp_path, fake_embedder):
    from llmpopcorn.predict import Table, model_class

    table = Table.from_frame(synthetic_frame(200, seed=1))
    model = model_class("knn")(embedder="fake", k=5).fit(table)
    model.save(tmp_path / "knn")
    score = PopularityScorer(tmp_path / "knn").score_text("topic2word1 topic2word4")
    assert score.interval is None  # saved without a calibrated interval
    assert score.category == "Cat2" and len(score.neighbours) == 5
    assert score.percentile is not None


def test_a_model_whose_embedder_is_not_installed_raises_missing_extra(monkeypatch, knn_model):
    from llmpopcorn.predict import scorer as scorer_mod

    path, _ = knn_model
    monkeypatch.setitem(scorer_mod.EMBEDDER_NEEDS, "fake", (("no_such_module_xyz",), "ml"))
    with pytest.raises(MissingExtraError) as err:
        load_scorer(Settings.resolve(predictor=str(path)))
    assert "llmpopcorn[ml]" in str(err.value)


def test_a_visual_model_scores_from_the_rendered_clip(tmp_path, fake_embedder):
    from llmpopcorn.backends.base import Clip
    from llmpopcorn.predict import Table, model_class
    from llmpopcorn.predict.visual import RandomProjectionExtractor

    table = Table.from_frame(synthetic_frame(150, seed=2))
    table.visual = np.random.default_rng(0).normal(size=(150, 4)).astype(np.float32)
    params = {"embedder": "fake", "epochs": 2, "hidden": 16, "text_prior": False}
    model = model_class("mmra")(**params, visual_dim=4, visual_extractor="random-projection")
    model.fit(table).save(tmp_path / "vis")
    frames = [np.full((32, 24, 3), v, np.uint8) for v in (10, 200)]
    clips = [write_mp4(Clip([f] * 6, 6.0), tmp_path / f"c{i}.mp4") for i, f in enumerate(frames)]
    scorer = PopularityScorer(tmp_path / "vis")
    idea = Idea(title="topic1word1", cover_prompt="c", video_prompt="v")
    a, b = (scorer.score(idea, clip_path=c).log2_comments for c in clips)
    assert a != b  # the clip changes the score
    assert RandomProjectionExtractor(dim=4).dim == 4
    with pytest.raises(Exception, match="rendered clip"):
        scorer.score(idea)


def test_backends_lists_the_predictor_and_why_it_cannot_run(monkeypatch, tmp_path):
    from llmpopcorn.cli.backends import backend_table

    rows = backend_table(Settings.resolve())["predictor"]
    assert rows[0]["name"] == "default"
    bad = backend_table(Settings.resolve(predictor=str(tmp_path)))["predictor"][0]
    assert not bad["usable"] and "POPCORN_PREDICTOR" in bad["reason"]


def test_train_on_the_judge_part_records_part_and_inputs(tmp_path, csvs):
    from llmpopcorn.corpus.partition import in_part

    out = tmp_path / "judge"
    args = ["predictor", "train", "--data", str(csvs[0]), "--out", str(out), "--part", "judge"]
    result = run(*args, "--only", "category-mean")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["partition"]["part"] == "judge"
    assert config["inputs"] == {"text_fields": ["title"], "category": True}
    metrics = json.loads((out / "metrics.json").read_text())
    n_judge = int(in_part([str(i + 1) for i in range(400)], "judge").sum())
    assert metrics["partition"]["rows"] == n_judge < 400 == metrics["partition"]["corpus_rows"]
    assert sum(metrics["split"].values()) == n_judge


def test_judge_model_memory_holds_only_judge_videos(tmp_path, csvs, fake_embedder):
    from llmpopcorn.corpus.partition import part_of
    from llmpopcorn.predict import load_model
    from llmpopcorn.predict import train as train_mod

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "embedders_for", lambda models: {"fake"})
        path, _ = train_and_save(
            csvs[0],
            tmp_path / "m",
            model="knn",
            models=["knn"],
            cache_dir=tmp_path / "cache",
            part="judge",
        )
    model = load_model(path)
    assert model.memory_ids_.size and {part_of(v) for v in model.memory_ids_} == {"judge"}


def test_text_fields_are_those_that_carry_information():
    from llmpopcorn.corpus.table import validate_frame
    from llmpopcorn.predict.data import Table, informative_fields

    frame = synthetic_frame(50, seed=2)
    frame["cover_desc"] = frame["title_en"]  # a copy of the title carries nothing
    corpus = validate_frame(frame)
    assert informative_fields(corpus) == ["title"]
    frame["cover_desc"] = [f"cover {i}" for i in range(50)]
    frame["caption_en"] = ""
    corpus = validate_frame(frame)
    assert informative_fields(corpus) == ["title", "cover_desc"]
    table = Table.from_corpus(corpus, text_fields=["title"])
    assert table.texts == frame["title_en"].tolist()
    both = Table.from_corpus(corpus, text_fields=["title", "cover_desc"])
    assert both.texts[3] == f"{frame['title_en'][3]}. cover 3"


def test_stacked_model_scores_with_the_memory_of_its_retrieval_member(tmp_path, fake_embedder):
    from llmpopcorn.predict import Table, model_class

    table = Table.from_frame(synthetic_frame(240, seed=1))
    valid = Table.from_frame(synthetic_frame(60, seed=7))
    valid.ids = np.array([f"v{i}" for i in range(len(valid))], dtype=object)
    params = {
        "embedder": "fake",
        "folds": 3,
        "mmra": {"epochs": 4, "hidden": 32, "lr": 3e-3, "text_prior": False},
        "lexical": {"word_features": 2**12, "cross_features": 2**11, "tag_features": 2**8},
    }
    model = model_class("mmra-stack")(**params).fit(table, valid)
    model.save(tmp_path / "stack")
    score = PopularityScorer(tmp_path / "stack").score_text("topic2word1 topic2word4")
    assert score.category == "Cat2" and score.neighbours
    assert {n.video_id for n in score.neighbours} <= set(model.mmra_.memory_ids_)
    query = Table(ids=["q"], texts=["topic2word1 topic2word4"], categories=["Cat2"])
    assert score.log2_comments == pytest.approx(model.predict(query)[0], abs=1e-3)


def test_eval_reads_only_the_text_fields_the_model_learned_from(tmp_path, csvs):
    out = tmp_path / "m"
    run("predictor", "train", "--data", str(csvs[0]), "--out", str(out), "--only", "tfidf-ridge")
    held = synthetic_frame(120, seed=5)
    held["video_id"] = [str(10_000 + i) for i in range(len(held))]
    plain = run("predictor", "eval", "--model", str(out), "--data", str(csvs[1]), "--json")
    held["cover_desc"] = "topic0word1 topic0word2 topic7word3 an unrelated cover"
    noisy = write_csv(tmp_path / "noisy.csv", held)
    other = run("predictor", "eval", "--model", str(out), "--data", str(noisy), "--json")
    a, b = json.loads(plain.stdout), json.loads(other.stdout)
    assert a["text_fields"] == ["title"] and a["nmse"] == b["nmse"] and a["src"] == b["src"]
