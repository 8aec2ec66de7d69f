"""Post text: the idea's caption and hashtags (validated like the paper's fields), the
hashtags popular videos of a category use (from the corpus), and what the offline stand-in
composes from them. The video prompt is never the caption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmpopcorn.backends.llm.compose import topical_phrases, whole_phrase
from llmpopcorn.backends.llm.offline import OfflineComposer
from llmpopcorn.core.types import TITLE_MAX_CHARS, ChatRequest, Idea, Message
from llmpopcorn.corpus.hashtags import (
    category_hashtags,
    hashtags_for,
    title_hashtags,
)
from llmpopcorn.corpus.table import load_corpus
from llmpopcorn.enhance.parsing import ReplyParseError, parse_idea
from pe_fixtures import corpus_rows, real_data_dir, write_corpus

BASE = {"title": "Corgi surf", "cover_prompt": "A corgi on a board", "video_prompt": "It surfs"}


def test_caption_and_hashtags_are_optional_and_normalised():
    assert Idea(**BASE).caption is None and Idea(**BASE).hashtags == []
    idea = Idea(**BASE, caption="  Wait for it!\u202e ", hashtags="#corgi, surf life, ##, 2024")
    assert idea.caption == "Wait for it!"
    assert idea.hashtags == ["#corgi", "#SurfLife"]  # "2024" has no letter, "##" nothing
    many = Idea(**BASE, hashtags=[f"tag{i}" for i in range(9)] + ["#TAG1"])
    assert len(many.hashtags) == 6 and many.hashtags[1] == "#tag1"  # repeats dropped, six kept


@pytest.mark.parametrize("field", ["video_prompt", "cover_prompt"])
def test_a_caption_that_repeats_a_generation_prompt_is_invalid(field):
    prompt = "A 3-second vertical video of a corgi riding a wave at sunset, slow motion"
    with pytest.raises(ValidationError, match="caption repeats a generation prompt"):
        Idea(**{**BASE, field: prompt, "caption": prompt})
    with pytest.raises(ValidationError, match="caption repeats"):  # the prompt inside it
        Idea(**{**BASE, field: prompt, "caption": f"Look! {prompt}. Wow."})


def test_parser_reads_the_post_fields_and_feeds_back_what_is_wrong():
    reply = json.dumps({**BASE, "Post caption": "Surf's up!", "tags": ["#corgi", "beach"]})
    idea = parse_idea(f"```json\n{reply}\n```")
    assert idea.caption == "Surf's up!" and idea.hashtags == ["#corgi", "#beach"]
    bad = json.dumps({**BASE, "caption": BASE["video_prompt"] + " " * 3})
    with pytest.raises(ReplyParseError, match="^the caption repeats a generation prompt"):
        parse_idea(bad)
    with pytest.raises(ReplyParseError, match='"caption"'):
        parse_idea(json.dumps({**BASE, "caption": "x" * 400}))


def test_title_hashtags_are_short_camel_case_ascii():
    title = "crazy combo # summer strike! #KPL #2022 #this is a very long sentence tag"
    assert title_hashtags(title) == ["#SummerStrike", "#KPL"]


def test_category_hashtags_come_from_several_popular_videos(tmp_path):
    rows = corpus_rows()
    game = [r for r in rows if r["partition"] == "Game"]
    game.sort(key=lambda r: -int(r["comment_count"]))
    for row in game[:4]:  # the most-commented: a shared tag, and one used once
        row["title_en"] = f"{row['title_en']} #speed run"
    game[0]["title_en"] += " #OnlyMe"
    game[-1]["title_en"] += " #quiet #Quiet #quiet2"  # used by the least-commented only
    game[-2]["title_en"] += " #quiet"
    game[-3]["title_en"] += " #quiet"
    table = category_hashtags(load_corpus(write_corpus(tmp_path, rows)))
    assert table == {"Game": ["#SpeedRun"]}  # 3+ popular videos; none of one video's tags


def test_hashtags_for_a_category_come_from_the_corpus_the_run_reads(tmp_path):
    assert hashtags_for("Anime") == {"category": "Anime", "hashtags": [], "source": None}
    rows = corpus_rows()
    for row in rows:
        if row["partition"] == "Animal":
            row["title_en"] += " #cute pets"
    corpus = load_corpus(write_corpus(tmp_path, rows))
    assert hashtags_for("Animal", corpus) == {
        "category": "Animal",
        "hashtags": ["#CutePets"],
        "source": "the configured corpus",
    }
    assert hashtags_for(None)["hashtags"] == []


def test_nothing_derived_from_microlens_text_ships_with_the_package():
    """MicroLens' terms forbid redistributing its text: no table of its tags (or titles)
    is package data; the shipped models hold weights and ids, not text."""
    root = Path(__import__("llmpopcorn").__file__).parent
    shipped = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".txt", ".csv")]
    assert not [p for p in shipped if "hashtag" in p.name]
    data = REAL_DATA
    if data is None:  # without the data folder only the name check above runs
        return
    titles = {t for t in corpus_titles(data / "microlens" / "videos.csv") if len(t) > 25}
    for path in shipped:
        text = path.read_text(encoding="utf-8", errors="ignore")
        assert not any(title in text for title in titles), path


REAL_DATA = real_data_dir()


def corpus_titles(path: Path) -> list[str]:
    import csv

    with path.open(encoding="utf-8") as fh:
        return [row.get("title_en") or "" for row in csv.DictReader(fh)]


def compose(query, seed=42, **context):
    reply = OfflineComposer().complete(
        ChatRequest(
            messages=[Message(role="user", content=query)],
            seed=seed,
            context={"query": query, **context},
        )
    )
    return parse_idea(reply)


def test_stand_in_caption_and_hashtags_come_from_the_query_and_the_category():
    tags = ["#KingGlory", "#Minecraft", "#OriginalGod"]
    idea = compose(
        "Showcase the most creative castles built in Minecraft survival mode",
        category="Game",
        category_hashtags=tags,
    )
    assert idea.caption and idea.caption != idea.video_prompt
    assert "Minecraft" in idea.caption and idea.caption.count(".") + idea.caption.count("?") <= 2
    # the query's topics first, then the category's tags, the one naming a topic first
    assert idea.hashtags[0] == "#Minecraft" and "#KingGlory" in idea.hashtags
    assert 3 <= len(idea.hashtags) <= 6
    title_only = {w.lower() for w in idea.title.split()} - {"minecraft", "castles"}
    assert not {t[1:].lower() for t in idea.hashtags} & title_only
    # no category: the query alone, padded to three
    bare = compose("a corgi learns to surf")
    assert bare.hashtags[:2] == ["#corgi", "#surf"] and len(bare.hashtags) >= 3


@pytest.mark.parametrize(
    "subject, room, phrase",
    [
        ("battle between Levi Ackerman and a Titan in Attack on Titan", 45,
         "battle between Levi Ackerman and a Titan"),
        ("battle between Levi Ackerman and a Titan in Attack on Titan", 38,
         "battle between Levi Ackerman"),
        ("how traditional cooking techniques are being revived today", 40,
         "traditional cooking techniques"),
        ("anime characters inspired by historical figures", 30, None),
        ("a corgi learns to surf", 30, "a corgi learns to surf"),
    ],
)  # fmt: skip
def test_whole_phrase_never_cuts_inside_a_phrase(subject, room, phrase):
    assert whole_phrase(subject, room) == phrase


def test_stand_in_titles_fit_without_cutting_and_seeds_change_the_words():
    queries = [
        "Animate a battle between Levi Ackerman and a Titan in Attack on Titan.",
        "Create a video about something that makes people feel nostalgic",
        "Showcase how traditional cooking techniques are being revived today.",
    ]
    for query in queries:
        titles = [compose(query, seed=s).title for s in range(40, 46)]
        assert all(len(t) <= TITLE_MAX_CHARS and "…" not in t for t in titles), titles
        assert len(set(titles)) == len(titles), titles  # consecutive seeds: new words
    assert "makes people feel nostalgic" in compose(queries[1]).title  # the whole clause


def test_topical_phrases_prefer_names_then_noun_runs():
    assert topical_phrases("Goku’s most iconic transformations in Dragon Ball") == [
        "Goku",
        "Dragon Ball",
        "iconic transformations",
    ]
    assert topical_phrases("League of Legends champions")[0] == "League of Legends"
