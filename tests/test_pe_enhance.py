"""Prompt enhancement: category choice, pools, counts, determinism, prompt text (issue 4)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from llmpopcorn.backends.embed.tfidf import TfidfEmbedder
from llmpopcorn.core.errors import ConfigError, InputError
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import Reference
from llmpopcorn.corpus.index import CorpusIndex
from llmpopcorn.corpus.table import load_corpus
from llmpopcorn.enhance.pe import (
    PEParams,
    PEPromptBuilder,
    category_resolver,
    format_reference,
    share,
    split_pools,
)
from llmpopcorn.pipeline.core import Pipeline
from pe_fixtures import GAME, write_corpus


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("pe")
    corpus = load_corpus(write_corpus(root / "data"))
    return CorpusIndex.open(corpus, TfidfEmbedder(), root / "cache")


def builder(index, **params) -> PEPromptBuilder:
    """The paper's matcher (category names, no minimum size) unless a test asks otherwise:
    the fixture's categories are named after their content and all tiny."""
    params = {"category_match": "name", "min_category_size": 1, **params}
    return PEPromptBuilder(index, PEParams(**params))


def counts(prompt) -> tuple[int, int]:
    labels = [r.label for r in prompt.references]
    return labels.count("popular"), labels.count("unpopular")


def test_share_is_floor_without_float_artefacts():
    assert share(50, 0.1) == 5
    assert share(10, 0.1) == 1
    assert share(100, 0.1) == 10
    assert share(100, 0.29) == 29  # 0.29 * 100 == 28.999999999999996
    assert share(3, 0.1) == 0
    assert PEParams().n_popular == 45 and PEParams().n_unpopular == 5


@pytest.mark.parametrize(
    ("query", "category"),
    [
        ("the best game speedrun ever", "Game"),
        ("delicacy for a rainy day", "Delicacy"),
        ("sports highlights of the year", "Sports"),
        ("an animal that dances", "Animal"),
    ],
)
def test_category_choice_follows_the_category_name(index, query, category):
    prompt = builder(index, n_refs=3).build(query)  # Sports has 3 videos: no top-up
    assert prompt.settings["categories"][0]["name"] == category
    assert {r.category for r in prompt.references} == {category}


def test_num_tags_takes_the_most_similar_categories(index):
    q = index.embed_query("game and sports and animal")
    paper = category_resolver(index, method="name", min_size=1)  # the paper's matcher
    chosen = [c.name for c in paper.resolve(q, 3)]
    assert set(chosen) == {"Game", "Sports", "Animal"}
    assert len(paper.resolve(q, 99)) == len(index.category_names)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # Game has 15 videos: its unpopular pool is floor(15 * ratio)
        ({"n_refs": 10}, (9, 1)),
        ({"n_refs": 10, "ratio": 0.2}, (8, 2)),
        ({"n_refs": 4, "ratio": 0.5}, (2, 2)),
        ({"n_refs": 5, "ratio": 0.0}, (5, 0)),
        ({"n_refs": 3, "ratio": 1.0}, (0, 3)),
        ({"n_refs": 15}, (14, 1)),  # popular pool 14, unpopular 1
        # all four categories (40 videos): pools of 36 and 4
        ({"n_refs": 10, "num_tags": 4}, (9, 1)),
        ({"n_refs": 20, "num_tags": 4, "ratio": 0.25}, (15, 5)),
        ({"n_refs": 50, "num_tags": 4}, (36, 4)),  # fewer videos than requested
    ],
)
def test_exact_popular_and_unpopular_counts(index, params, expected):
    prompt = builder(index, **params).build("the best game speedrun ever")
    assert counts(prompt) == expected
    pe = prompt.settings
    assert (pe["shown"]["popular"], pe["shown"]["unpopular"]) == expected
    want = params["n_refs"] - share(params["n_refs"], params.get("ratio", 0.1))
    if expected[0] < want:
        assert any("requested" in note for note in pe["notes"])


def test_default_is_45_popular_and_5_unpopular(tmp_path):
    rows = [
        {
            "video_id": str(i),
            "title_en": f"game clip number {i} with a twist {i * 7}",
            "partition": "Game",
            "comment_count": i % 37,
        }
        for i in range(200)
    ]
    from pe_fixtures import write_corpus as write

    corpus = load_corpus(write(tmp_path / "d", rows))
    idx = CorpusIndex.open(corpus, TfidfEmbedder(), None, use_cache=False)
    prompt = PEPromptBuilder(idx).build("a game clip")
    assert counts(prompt) == (45, 5)
    assert prompt.settings["pools"] == {"videos": 200, "popular": 180, "unpopular": 20}


def test_unpopular_references_come_from_the_bottom_of_the_pool(index):
    prompt = builder(index, n_refs=15, ratio=0.4, num_tags=4).build("game")
    popular = [r.comment_count for r in prompt.references if r.label == "popular"]
    unpopular = [r.comment_count for r in prompt.references if r.label == "unpopular"]
    assert max(unpopular) <= min(popular)


def test_references_are_ordered_by_similarity_within_each_label(index):
    prompt = builder(index, n_refs=12, ratio=0.25).build("castle level speedrun")
    # GAME[0] shares three words with the query (it sits in the unpopular pool)
    best = max(prompt.references, key=lambda r: r.similarity)
    assert best.title == GAME[0] and best.label == "unpopular"
    for label in ("popular", "unpopular"):
        sims = [r.similarity for r in prompt.references if r.label == label]
        assert sims == sorted(sims, reverse=True)
    labels = [r.label for r in prompt.references]
    assert labels == sorted(labels, key=lambda x: x != "popular")  # popular first


def test_ties_at_the_pool_boundary_are_broken_by_the_seed():
    rows = np.arange(10)
    comments = np.array([5, 5, 9, 9, 9, 9, 9, 9, 9, 9])  # the bottom 10 % is one of two 5s
    picks = {tuple(split_pools(rows, comments, 0.1, seed)[1]) for seed in range(20)}
    assert picks == {(0,), (1,)}  # fair: both tied videos get their turn
    a = split_pools(rows, comments, 0.1, 42)
    b = split_pools(rows, comments, 0.1, 42)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_same_seed_same_prompt_and_seed_is_recorded(index):
    first = builder(index, n_refs=10, seed=7).build("game boss fight")
    again = builder(index, n_refs=10, seed=7).build("game boss fight")
    assert first.model_dump() == again.model_dump()
    assert first.settings["seed"] == 7


def test_prompt_contains_every_reference_exactly_once(index):
    prompt = builder(index, n_refs=20, num_tags=4, ratio=0.2).build("game animal food sports")
    system, user = prompt.messages
    assert system.role == "system" and user.role == "user"
    for ref in prompt.references:
        assert user.content.count(f"Title: {ref.title}\n") == 1
        assert f"Comment count: {ref.comment_count}" in user.content
    headings = re.findall(r"^(Popular|Unpopular) reference video \d+:$", user.content, re.M)
    assert len(headings) == len(prompt.references) == 20
    # the 7-step chain and the basic mode's answer contract
    for step in range(1, 8):
        assert re.search(rf"^{step}\. ", user.content, re.M)
    assert '"title"' in user.content and '"cover_prompt"' in user.content
    assert "copying a reference is strictly forbidden" in user.content
    assert "game animal food sports" in user.content
    names = [f'"{c["name"]}"' for c in prompt.settings["categories"]]
    assert f"from the {', '.join(names[:-1])} and {names[-1]} categories of" in user.content
    single = builder(index, n_refs=3).build("game")
    assert 'from the "Game" category of' in single.messages[1].content


def test_copies_of_the_title_are_not_repeated_in_the_prompt():
    same = Reference(video_id="1", title="A cat", cover_desc="a cat!", caption="", comment_count=3)
    text = format_reference(same, 1)
    assert "Cover description" not in text and "Description" not in text
    full = Reference(
        video_id="2",
        title="A cat",
        cover_desc="orange cat on a sofa",
        caption="it naps",
        comment_count=3,
    )
    text = format_reference(full, 1)
    assert "Cover description: orange cat on a sofa" in text and "Description: it naps" in text


def test_query_in_another_language_still_gets_references(index):
    prompt = builder(index, n_refs=10).build("一只小猫在厨房里玩耍")
    assert counts(prompt) == (9, 1)
    assert prompt.settings["categories"][0]["name"] == "Game"  # no signal: the largest
    assert any("no known words" in note for note in prompt.settings["notes"])
    assert (
        prompt.model_dump() == builder(index, n_refs=10).build("一只小猫在厨房里玩耍").model_dump()
    )


def test_small_category_is_topped_up_from_the_next_ones_and_says_so(index):
    prompt = builder(index, n_refs=8).build("sports")
    pe = prompt.settings
    assert pe["categories"][0]["name"] == "Sports" and pe["categories"][0]["videos"] == 3
    assert pe["topped_up"] and pe["pools"]["videos"] >= 8  # Sports has only 3 videos
    assert counts(prompt) == (8 - share(8, 0.1), share(8, 0.1))
    assert any("topped up from" in note for note in pe["notes"])
    assert {r.category for r in prompt.references} - {"Sports"}  # others filled in


def test_when_the_whole_corpus_is_too_small_the_shortfall_is_said(index):
    prompt = builder(index, n_refs=50).build("sports")
    assert counts(prompt) == (36, 4)  # all 40 videos
    assert sum("requested" in note for note in prompt.settings["notes"]) == 2


@pytest.mark.parametrize(
    ("query", "category"),
    [
        ("a kitten and a puppy play together", "Animal"),
        ("crispy fried chicken and dumplings", "Delicacy"),
        ("a sniper clutch in the ranked match", "Game"),
    ],
)
def test_centroid_matcher_follows_content_not_names(index, query, category):
    prompt = builder(index, n_refs=4, category_match="centroid").build(query)
    assert prompt.settings["categories"][0]["name"] == category
    assert prompt.settings["matcher"]["method"] == "centroid"


def test_min_category_size_skips_tiny_categories(index):
    # Sports (3 videos) wins on its name, but with a minimum of 5 it is never chosen
    prompt = builder(index, n_refs=4, min_category_size=5).build("sports")
    assert prompt.settings["categories"][0]["name"] != "Sports"
    assert prompt.settings["min_category_size"] == 5


def test_reference_pool_draws_only_from_the_reference_part(index):
    from llmpopcorn.corpus.partition import part_of

    prompt = builder(index, n_refs=10, num_tags=4, pool="reference").build("game")
    assert prompt.references
    assert {part_of(r.video_id) for r in prompt.references} == {"reference"}
    assert prompt.settings["pool"]["part"] == "reference"
    everything = builder(index, n_refs=10, num_tags=4).build("game")
    assert {part_of(r.video_id) for r in everything.references} == {"reference", "judge"}


def test_bad_parameters_are_rejected():
    with pytest.raises(ConfigError, match="ratio"):
        PEParams(ratio=1.5)
    with pytest.raises(ConfigError, match="n_refs"):
        PEParams(n_refs=0)
    with pytest.raises(ConfigError, match="num_tags"):
        PEParams(num_tags=0)


def test_pipeline_prompt_builds_pe_from_settings_and_rejects_empty_query(tmp_path):
    data = write_corpus(tmp_path / "data")
    settings = Settings.resolve(
        mode="pe", data_dir=data, embedder="tfidf", cache_dir=tmp_path / "cache", n_refs=5
    )
    pipeline = Pipeline(settings)
    prompt = pipeline.prompt("  a game   boss fight ")
    assert prompt.mode == "pe" and len(prompt.references) == 5
    assert prompt.query == "a game boss fight"
    with pytest.raises(InputError, match="empty"):
        pipeline.prompt("   ")
    assert list((tmp_path / "cache" / "embeddings").glob("*.items.npy"))


def test_pe_without_data_names_the_setting(tmp_path):
    settings = Settings.resolve(mode="pe", embedder="tfidf", cache_dir=tmp_path)
    with pytest.raises(Exception, match="POPCORN_DATA"):
        Pipeline(settings).prompt("a game")
