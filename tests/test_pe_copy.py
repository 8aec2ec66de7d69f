"""The copy check, the offline composer in PE mode, and PE runs end to end (issue 4)."""

from __future__ import annotations

import json

import pytest

from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.backends.llm.offline import OfflineComposer, borrow, hook_of
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import ChatRequest, Idea, Message, Reference
from llmpopcorn.enhance.pe import COPY_THRESHOLD, CopyGuard, find_copy, normalise_title
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.pipeline.report import load_record
from pe_fixtures import GAME, write_corpus

REFS = [
    Reference(video_id="1", title="Cat knocks a glass off the kitchen table", label="popular"),
    Reference(video_id="2", title="dog waits at the station", label="popular"),
    Reference(video_id="3", title="hamster stuffs seeds", label="unpopular"),
]


def idea(title: str) -> Idea:
    return Idea(title=title, cover_prompt="a cover", video_prompt="a clip")


def reply(title: str) -> str:
    return json.dumps(
        {"title": title, "cover_prompt": "a vivid cover", "video_prompt": "a lively clip"}
    )


def test_normalise_title_drops_case_punctuation_accents_and_emoji():
    assert normalise_title("  Café — CAT!!! 😺  knocks ") == "cafe cat knocks"


@pytest.mark.parametrize(
    ("title", "kind"),
    [
        ("cat knocks a glass off the kitchen table!", "exact"),
        ("Cat knocks a glass off the kitchen tables", "near"),
        ("Believe it or not: cat knocks a glass off the kitchen table at 3 am", "contains"),
    ],
)
def test_copies_are_found(title, kind):
    match = find_copy(title, REFS)
    assert match is not None and match.video_id == "1" and match.kind == kind


@pytest.mark.parametrize(
    "title",
    [
        "My cat judges every glass in the house",
        "dog waits",  # a short shared phrase is not a copy
        "A corgi learns to surf",
    ],
)
def test_original_titles_pass(title):
    assert find_copy(title, REFS) is None


def test_threshold_is_between_one_word_changes_and_different_titles():
    # one word changed in an eight-word title is still a copy ...
    near = "Cat knocks a cup off the kitchen table"
    assert find_copy(near, REFS, COPY_THRESHOLD) is not None
    # ... a title on the same topic in other words is not
    assert find_copy("Kitchen chaos: the cat strikes again", REFS, COPY_THRESHOLD) is None


def test_guard_reasks_once_then_keeps_and_reports():
    guard = CopyGuard(REFS)
    copy = idea("Cat knocks a glass off the kitchen table")
    assert "copies the title of reference video 1" in guard(copy)
    assert guard(copy) is None  # only one re-ask
    report = guard.report(copy)
    assert report["copied"] and report["reasked"] == 1
    assert report["match"]["video_id"] == "1" and report["status"].startswith("copy")
    assert guard.report(idea("Something new"))["status"] == "original after a re-ask"
    assert CopyGuard(REFS).report(idea("Something new"))["status"] == "original"


@pytest.fixture
def pe_settings(tmp_path):
    data = write_corpus(tmp_path / "data")
    return Settings.resolve(
        mode="pe",
        data_dir=data,
        embedder="tfidf",
        cache_dir=tmp_path / "cache",
        out_dir=tmp_path / "runs",
        n_refs=10,
        score=False,
    )


def test_pe_run_reasks_a_copied_title_and_records_it(pe_settings):
    llm = FakeLLM([reply(GAME[0].upper()), reply("Castle speedrun, but blindfolded")])
    record = Pipeline(pe_settings, llm=llm).make("castle level speedrun")
    assert record.idea.title == "Castle speedrun, but blindfolded"
    assert len(record.attempts) == 2 and "copies the title" in record.attempts[0].error
    assert record.copy_check["status"] == "original after a re-ask"
    assert record.copy_check["flagged"][0]["title"] == GAME[0]
    # the feedback was sent to the LLM with the references still in the prompt
    second = llm.requests[1].messages
    assert "copies the title" in second[-1].content and "Title: " + GAME[0] in second[1].content


def test_pe_run_keeps_a_second_copy_and_flags_it(pe_settings):
    llm = FakeLLM([reply(GAME[0])], repeat_last=True)
    record = Pipeline(pe_settings, llm=llm).make("castle level speedrun")
    assert len(record.attempts) == 2  # re-asked once, not until max_attempts
    assert record.copy_check["copied"] and record.copy_check["reasked"] == 1


def test_pe_run_records_references_and_the_report_explains_the_idea(pe_settings):
    record = Pipeline(pe_settings).make("a game boss fight")
    assert record.status == "ok" and record.mode == "pe"
    assert len(record.references) == 10
    assert {r.label for r in record.references} == {"popular", "unpopular"}
    assert all(r.similarity is not None and r.comment_count is not None for r in record.references)
    assert record.enhancement["categories"][0]["name"] == "Game"
    assert record.copy_check["status"] == "original"
    saved = load_record(record.run_dir)
    assert [r.video_id for r in saved.references] == [r.video_id for r in record.references]
    html = (pe_settings.out_dir / record.run_dir.split("/")[-1] / "report.html").read_text()
    assert "reference videos" in html.lower() and record.references[0].title in html


def _context(query: str, refs: list[Reference]) -> ChatRequest:
    return ChatRequest(
        messages=[Message(role="user", content=query)],
        context={"query": query, "references": [r.model_dump() for r in refs]},
    )


def test_hook_families():
    assert hook_of("Can you believe it?") == "question"
    assert hook_of("new skin # game") == "hashtag"
    assert hook_of("POV: you lose") == "pov"
    assert hook_of("so good!") == "exclaim"
    assert hook_of("top 5 moves") == "number"
    assert hook_of("a quiet day") == "statement"


def test_borrow_contrasts_popular_with_unpopular_references():
    refs = [
        Reference(video_id=str(i), title=t, label="popular", comment_count=c)
        for i, (t, c) in enumerate(
            [
                ("Who wins the castle duel?", 300),
                ("Is this castle haunted?", 200),
                ("castle tour", 5),
            ]
        )
    ] + [
        Reference(
            video_id="9", title="boring lecture on old walls", label="unpopular", comment_count=1
        )
    ]
    borrowed = borrow([r.model_dump() for r in refs], "a knight story")
    assert borrowed.hook == "question"
    # in every popular title and no unpopular one: the most typical word of success
    assert borrowed.keywords[0] == "castle" and "lecture" not in borrowed.keywords


def test_offline_composer_uses_references_and_never_copies_a_title():
    composer = OfflineComposer()
    refs = [
        Reference(
            video_id="1",
            title="Is this the best speedrun ever?",
            label="popular",
            comment_count=400,
        ),
        Reference(
            video_id="2",
            title="Can you beat this castle level?",
            label="popular",
            comment_count=300,
        ),
        Reference(video_id="3", title="my slow gameplay", label="unpopular", comment_count=1),
    ]
    basic = json.loads(composer.complete(_context("castle speedrun", [])))
    pe = json.loads(composer.complete(_context("castle speedrun", refs)))
    assert basic["title"] != pe["title"]
    assert pe["title"].endswith("?")  # the popular references' hook: questions
    assert "speedrun" not in pe["cover_prompt"].split("share:")[-1]  # no query words re-used
    assert "question" in pe["cover_prompt"] and "question" not in basic["cover_prompt"]
    # a query that is a reference's title: the composer picks another pattern
    same = [Reference(video_id="7", title="Castle speedrun", label="popular", comment_count=50)]
    out = json.loads(composer.complete(_context("Castle speedrun", same)))
    assert find_copy(out["title"], same) is None


def test_pe_run_against_an_openai_compatible_server(pe_settings, monkeypatch):
    from fake_openai_server import FakeOpenAIServer, completion

    monkeypatch.setenv("POPCORN_LLM_API_KEY", "sk-test")
    answer = {
        "title": "Blindfolded castle run",
        "cover_prompt": "a knight",
        "video_prompt": "he runs",
    }
    reasoning = "Step 1: the popular videos use records and challenges...\n"
    with FakeOpenAIServer() as srv:
        srv.queue(200, completion(reasoning + "```json\n" + json.dumps(answer) + "\n```"))
        base = pe_settings.model_dump(exclude_none=True)
        settings = Settings.resolve(
            **{**base, "llm": "openai", "llm_base_url": srv.url, "llm_model": "m"}
        )
        record = Pipeline(settings).make("castle level speedrun")
        sent = srv.chat_requests[0]["body"]["messages"]
    assert record.idea.title == "Blindfolded castle run"
    assert record.backends["llm"].is_llm and record.copy_check["status"] == "original"
    assert [m["content"] for m in sent] == [m.content for m in record.messages]
    assert all(f"Title: {r.title}\n" in sent[1]["content"] for r in record.references)
