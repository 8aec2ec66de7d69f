import json

import pytest

from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.backends.llm.offline import OfflineComposer, fit_title, subject_of
from llmpopcorn.core.errors import InvalidReplyError
from llmpopcorn.enhance.prompts import BasicPromptBuilder, example_idea
from llmpopcorn.pipeline.ideate import SamplingParams, ideate

GOOD = json.dumps(
    {"title": "Corgi surf", "cover_prompt": "a corgi on a board", "video_prompt": "it rides"}
)


def prompt(query="a corgi learns to surf"):
    return BasicPromptBuilder().build(query)


def test_basic_prompt_has_the_papers_parts():
    p = prompt()
    system, user = p.messages
    assert system.role == "system" and "talented video creator" in system.content
    assert "3-second" in system.content
    assert "a corgi learns to surf" in user.content
    assert "at most 50 characters" in user.content
    assert json.dumps(example_idea(), indent=2) in user.content


def test_first_valid_reply_is_used_and_params_are_passed():
    llm = FakeLLM([GOOD])
    params = SamplingParams(temperature=0.3, top_p=0.8, seed=7, max_tokens=99)
    result = ideate(llm, prompt(), params)
    assert result.idea.title == "Corgi surf"
    assert len(result.attempts) == 1 and result.attempts[0].error is None
    req = llm.requests[0]
    assert (req.temperature, req.top_p, req.seed, req.max_tokens) == (0.3, 0.8, 7, 99)
    assert req.context["query"] == "a corgi learns to surf"


def test_invalid_reply_is_reasked_with_the_error():
    llm = FakeLLM(["no json here", json.dumps(example_idea()), GOOD])
    result = ideate(llm, prompt(), SamplingParams(max_attempts=3))
    assert result.idea.title == "Corgi surf"
    assert [a.error is None for a in result.attempts] == [False, False, True]
    third = llm.requests[2].messages
    # the conversation carries both bad replies and the feedback about them
    assert third[2].role == "assistant" and third[2].content == "no json here"
    assert "no JSON object" in third[3].content
    assert "repeats the example" in third[5].content
    assert result.messages == third


def test_gives_up_after_max_attempts_keeping_raw_replies():
    llm = FakeLLM(["nope 1", "nope 2"])
    with pytest.raises(InvalidReplyError) as info:
        ideate(llm, prompt(), SamplingParams(max_attempts=2))
    assert [a.reply for a in info.value.attempts] == ["nope 1", "nope 2"]
    assert "2 attempt" in info.value.message


def test_check_hook_can_reject_a_valid_idea():
    llm = FakeLLM([GOOD, GOOD.replace("Corgi surf", "Corgi rides")])
    result = ideate(
        llm,
        prompt(),
        SamplingParams(),
        check=lambda idea: "copied" if idea.title == "Corgi surf" else None,
    )
    assert result.idea.title == "Corgi rides"
    assert result.attempts[0].error == "copied"


def test_offline_composer_is_deterministic_valid_and_labelled():
    composer = OfflineComposer()
    assert composer.is_llm is False and composer.describe().is_llm is False
    a = ideate(composer, prompt(), SamplingParams(seed=1)).idea
    b = ideate(composer, prompt(), SamplingParams(seed=1)).idea
    assert a == b
    assert len(a.title) <= 50 and "corgi" in a.title.lower()
    others = {ideate(composer, prompt(), SamplingParams(seed=s)).idea.title for s in range(12)}
    assert len(others) > 1  # the seed matters


@pytest.mark.parametrize(
    "query, subject",
    [
        (
            "Create a video showcasing Goku's most iconic transformations.",
            "Goku's most iconic transformations",
        ),
        ("Make a montage of Naruto's Rasengan evolution", "Naruto's Rasengan evolution"),
        ("a corgi learns to surf", "a corgi learns to surf"),
        ("Create a video", "Create a video"),
    ],
)
def test_subject_extraction(query, subject):
    assert subject_of(query) == subject


def test_fit_title_cuts_at_words():
    title = fit_title("word " * 30)
    assert len(title) <= 50 and title.endswith("…") and "wor…" not in title


def test_composer_handles_hostile_and_long_queries():
    composer = OfflineComposer()
    for query in ["x" * 2000, "🎬🐶🌊", "../../etc/passwd", "日本のアニメの歴史"]:
        idea = ideate(composer, prompt(query), SamplingParams()).idea
        assert 1 <= len(idea.title) <= 50


def test_without_post_text_the_llm_is_asked_the_papers_three_fields_only(tmp_path):
    """--no-post-text (the study's default): the prompt, its example, the answer's schema
    and a re-ask name title, cover prompt and video prompt only, in basic and PE mode."""
    from fakes import draft_pipeline
    from llmpopcorn.core.settings import Settings
    from llmpopcorn.enhance.parsing import idea_json_schema
    from llmpopcorn.enhance.pe import pe_messages

    post = ('"caption"', '"hashtags"', '"keywords"')
    with_post = prompt().messages[1].content
    assert all(name in with_post for name in post) and "exactly these six keys" in with_post
    settings = Settings.resolve(env={}, out_dir=tmp_path, render=False, score=False)
    for post_text in (True, False):
        llm = FakeLLM(["no json here", GOOD])
        pipeline = draft_pipeline(
            settings.model_copy(update={"post_text": post_text}),
            llm=llm,
            prompt_builder=BasicPromptBuilder(),
        )
        record = pipeline.make("a corgi learns to surf")
        assert record.idea.title == "Corgi surf"
        first, second = llm.requests
        asked = first.messages[1].content + second.messages[-1].content
        assert all((name in asked) is post_text for name in post), post_text
        assert ("exactly these three keys" in asked) is not post_text
        assert set(first.response_schema["properties"]) == set(
            idea_json_schema(post_text=post_text)["properties"]
        )
        assert ("caption" in first.response_schema["properties"]) is post_text
    pe = pe_messages("a corgi", [], ["Animal"], post_text=False)[1].content
    assert not any(name in pe for name in post) and "exactly these three keys" in pe
    assert json.dumps(example_idea()["title"]) in pe  # the example, cut to the paper's fields
    assert '"hashtags"' not in pe and '"cover_prompt"' in pe
