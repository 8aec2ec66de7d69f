import json

import pytest

from llmpopcorn.parsing import ReplyParseError, parse_idea, strip_reasoning
from llmpopcorn.prompts import example_idea

GOOD = {
    "title": "Corgi catches its first wave",
    "cover_prompt": "A corgi on a tiny surfboard riding a turquoise wave, golden light.",
    "video_prompt": "A corgi paddles, stands up on the board and rides a small wave.",
}


def test_plain_json():
    idea = parse_idea(json.dumps(GOOD))
    assert idea.title == GOOD["title"]
    assert idea.video_prompt == GOOD["video_prompt"]


def test_code_fence_and_text_around():
    reply = "Sure! Here is my idea:\n```json\n" + json.dumps(GOOD, indent=2) + "\n```\nEnjoy!"
    assert parse_idea(reply).title == GOOD["title"]


def test_think_block_is_ignored_even_with_json_inside():
    draft = json.dumps({**GOOD, "title": "draft title"})
    reply = f"<think>Let me draft {draft} then improve.</think>\n{json.dumps(GOOD)}"
    assert parse_idea(reply).title == GOOD["title"]


def test_think_block_with_missing_opening_tag():
    reply = 'reasoning... maybe {"title": "x"}</think>' + json.dumps(GOOD)
    assert parse_idea(reply).title == GOOD["title"]


def test_unterminated_think_has_no_answer():
    with pytest.raises(ReplyParseError, match="no JSON"):
        parse_idea("<think>still thinking " + json.dumps(GOOD))
    assert strip_reasoning("<think>abc") == ""


def test_trailing_commas_and_key_case_and_spaces():
    reply = (
        '{"Title": "Corgi surf", "Cover Prompt": "a corgi on a board",\n'
        ' "video-prompt": "the corgi rides a wave",}'
    )
    idea = parse_idea(reply)
    assert (idea.title, idea.cover_prompt, idea.video_prompt) == (
        "Corgi surf",
        "a corgi on a board",
        "the corgi rides a wave",
    )


def test_nested_answer_object():
    assert parse_idea(json.dumps({"answer": GOOD})).title == GOOD["title"]


def test_braces_inside_strings_do_not_confuse_the_scanner():
    obj = {**GOOD, "cover_prompt": "a sign that says {surf's up} and a } brace"}
    assert parse_idea("x " + json.dumps(obj) + " y").cover_prompt == obj["cover_prompt"]


def test_whitespace_is_normalised():
    obj = {**GOOD, "title": "  Corgi \n surfs  "}
    assert parse_idea(json.dumps(obj)).title == "Corgi surfs"


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("", "empty"),
        ("I cannot help with that.", "no JSON"),
        (json.dumps({"title": "x", "cover_prompt": "y"}), "missing the key.*video_prompt"),
        (json.dumps({**GOOD, "title": "t" * 51}), "51 characters"),
        (json.dumps({**GOOD, "title": "   "}), "title"),
        (json.dumps({**GOOD, "video_prompt": ""}), "video_prompt"),
        (json.dumps({**GOOD, "cover_prompt": 3}), "must be a string"),
        (json.dumps(example_idea()), "repeats the example"),
        (json.dumps({**GOOD, "title": example_idea()["title"]}), "repeats the example"),
    ],
)
def test_invalid_replies_say_why(reply, reason):
    with pytest.raises(ReplyParseError, match=reason):
        parse_idea(reply)


def test_title_of_exactly_fifty_characters_is_fine():
    assert len(parse_idea(json.dumps({**GOOD, "title": "t" * 50})).title) == 50


def test_last_complete_object_wins_when_two_are_equally_good():
    first = {**GOOD, "title": "first draft"}
    assert parse_idea(json.dumps(first) + "\nFinal:\n" + json.dumps(GOOD)).title == GOOD["title"]
