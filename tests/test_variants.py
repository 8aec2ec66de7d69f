"""`popcorn make --variants N` gives N different ideas: each variant takes its own angle
and a title that nearly repeats an earlier variant's is re-asked."""

from __future__ import annotations

from fakes import TitleLengthScorer
from llmpopcorn.core.copycheck import normalise_title
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
