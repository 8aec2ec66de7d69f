"""`popcorn make --variants N` gives N different ideas: each variant takes its own angle
and a title that nearly repeats an earlier variant's is re-asked."""

from __future__ import annotations

import json

from fakes import TitleLengthScorer
from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.core.copycheck import normalise_title, similar_title
from llmpopcorn.core.settings import Settings
from llmpopcorn.pipeline.core import Pipeline


def test_variants_of_a_long_query_get_distinct_titles(out_dir):
    # a query longer than a title: every offline template starts with it, so without the
    # near-duplicate re-ask the three variants were the same truncated title
    query = "A street food vendor in Bangkok flips a giant omelette"
    settings = Settings.resolve(env={}, out_dir=out_dir, render=False, variants=3)
    record = Pipeline(settings, scorer=TitleLengthScorer()).make(query)
    titles = [v.idea.title for v in record.variants]
    assert len(titles) == 3
    assert len({normalise_title(t) for t in titles}) == 3, titles
    sent = [a for a in record.attempts]
    assert sent  # every attempt, re-asks included, is recorded


def test_each_variant_is_told_its_own_angle(out_dir):
    settings = Settings.resolve(env={}, out_dir=out_dir, render=False, variants=2)
    record = Pipeline(settings, scorer=TitleLengthScorer()).make("a corgi learns to surf")
    assert "This is variant" in record.messages[-1].content or any(
        "This is variant" in m.content for m in record.messages
    )


def test_one_variant_is_asked_as_before(out_dir):
    settings = Settings.resolve(env={}, out_dir=out_dir, render=False)
    record = Pipeline(settings, scorer=TitleLengthScorer()).make("a corgi learns to surf")
    assert not any("This is variant" in m.content for m in record.messages)


def _pe_pipeline(settings, tmp_path, rows=None):
    from llmpopcorn.backends.embed.tfidf import TfidfEmbedder
    from llmpopcorn.corpus.index import CorpusIndex
    from llmpopcorn.corpus.table import load_corpus
    from llmpopcorn.enhance.pe import PEParams, PEPromptBuilder
    from pe_fixtures import write_corpus

    corpus = load_corpus(write_corpus(tmp_path / "data", rows))
    index = CorpusIndex.open(corpus, TfidfEmbedder(), tmp_path / "cache")
    params = PEParams(category_match="name", min_category_size=1, n_refs=10)
    return Pipeline(
        settings, scorer=TitleLengthScorer(), prompt_builder=PEPromptBuilder(index, params)
    )


def test_pe_variants_differ_and_use_the_categorys_corpus_hashtags(out_dir, tmp_path):
    """PE, the stand-in: three distinct titles (near-duplicates by the copy check's own
    measure), and hashtags that popular videos of the category use in the corpus."""
    from pe_fixtures import corpus_rows

    rows = corpus_rows()
    for row in rows:  # most Game videos share a tag
        if row["partition"] == "Game" and int(row["comment_count"]) > 20:
            row["title_en"] += " #speed run"
    settings = Settings.resolve(env={}, out_dir=out_dir, render=False, variants=3, mode="pe")
    pipeline = _pe_pipeline(settings, tmp_path, rows)
    record = pipeline.make("a ranked game comeback in the arena")
    titles = [v.idea.title for v in record.variants]
    assert len(titles) == 3 and all(v.duplicate_of is None for v in record.variants)
    for i, title in enumerate(titles):
        assert similar_title(title, titles[:i] + titles[i + 1 :]) is None, titles
    assert record.category["name"] == "Game"
    assert "#SpeedRun" in record.idea.hashtags, record.idea.hashtags
    # another take (the next seeds) brings new words, not only new colours
    again = pipeline.make("a ranked game comeback in the arena", seed=record.seed + 3)
    assert len({v.idea.title for v in again.variants} - set(titles)) >= 2


class _RepeatingLLM(FakeLLM):
    """An LLM that answers every request with the same idea (a stubborn model)."""

    def __init__(self):
        super().__init__(
            [json.dumps({"title": "Corgi surfs", "cover_prompt": "c", "video_prompt": "v"})],
            repeat_last=True,
        )


def test_a_repeat_is_reasked_with_the_twin_named_and_flagged_when_it_persists(out_dir):
    settings = Settings.resolve(env={}, out_dir=out_dir, render=False, variants=2)
    llm = _RepeatingLLM()
    record = Pipeline(settings, llm=llm, scorer=TitleLengthScorer()).make("a corgi surfs")
    reasks = [r.messages[-1].content for r in llm.requests[1:]]
    assert any('another variant\'s ("Corgi surfs")' in m for m in reasks), reasks
    # the second variant was told which titles were taken before its first attempt
    assert any('titles already taken: "Corgi surfs"' in m.content for m in llm.requests[1].messages)
    second = next(v for v in record.variants if v.seed == settings.seed + 1)
    assert second.duplicate_of == "Corgi surfs"
    assert any("could not be made distinct" in n for n in record.notes), record.notes
