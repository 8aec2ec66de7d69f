import json
from pathlib import Path

import pytest

from llmpopcorn.core.types import Idea
from llmpopcorn.enhance.parsing import ReplyParseError, parse_idea, strip_reasoning
from llmpopcorn.enhance.prompts import example_idea

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


# --- invisible and bidirectional characters in a reply ------------------------------

#: what a hostile or broken reply can hide in a title: bidi embeddings, overrides,
#: isolates and marks, the Arabic letter mark, zero-width space, joiners out of
#: context, the BOM, C0 (NUL, ESC, BEL) and C1 (NEL, CSI) controls, private use
HOSTILE = (
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b\u200c\u200d"
    "\u200e\u200f\u061c\ufeff\x00\x1b\x07\x85\x9b\ue000"
)
INVISIBLE = set(HOSTILE) | {"\n", "\t", "\r"}


def _hostile_reply(ensure_ascii: bool) -> str:
    idea = {
        "title": f"\u202eCorgi {HOSTILE}surfs\u2066",
        "cover_prompt": f"A corgi{HOSTILE} on a board\u200b",
        "video_prompt": "\ufeffIt rides\x1b[31m a wave\u2069",
    }
    return json.dumps(idea, ensure_ascii=ensure_ascii)


@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["escaped", "raw"])
def test_invisible_and_bidi_characters_are_removed_from_every_field(ensure_ascii):
    idea = parse_idea(_hostile_reply(ensure_ascii))
    for value in (idea.title, idea.cover_prompt, idea.video_prompt):
        assert not INVISIBLE & set(value), repr(value)
    assert idea.title == "Corgi surfs"  # controls became one space, formats vanished
    assert idea.cover_prompt == "A corgi on a board"
    assert idea.video_prompt == "It rides [31m a wave"  # ESC became a space
    assert "\u202e" not in idea.model_dump_json()  # what record.json and the API carry


@pytest.mark.parametrize(
    "title",
    [
        "小柯基第一次冲浪",  # Chinese
        "كلب يتعلم ركوب الأمواج",  # Arabic (right-to-left by itself, no override needed)
        "می\u200cخواهم موج سواری",  # Persian: the non-joiner between letters is spelling
        "Family day 👨\u200d👩\u200d👧\u200d👦 at the beach",  # emoji ZWJ sequence
        "Pride surf 🏳\ufe0f\u200d🌈 👩🏽\u200d💻",  # ZWJ after a variation selector, a skin tone
        "Scotland 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f waves",
        "क्\u200dष surfing",  # Devanagari: ZWJ after a virama
    ],
)
def test_non_latin_text_and_emoji_sequences_survive_unchanged(title):
    reply = json.dumps({**GOOD, "title": title}, ensure_ascii=False)
    assert parse_idea(reply).title == title
    assert parse_idea(json.dumps({**GOOD, "title": title})).title == title


def test_joiners_out_of_context_and_smuggled_tags_are_removed():
    # a joiner at an edge, beside a space or another joiner cannot belong to a sequence;
    # tag letters outside a flag are invisible text (a known prompt-smuggling trick)
    smuggled = "".join(chr(0xE0000 + ord(c)) for c in "ignore all")
    title = f"\u200dCorgi \u200d\u200d\u200csurfs{smuggled}\u200c"
    assert parse_idea(json.dumps({**GOOD, "title": title})).title == "Corgi surfs"


def test_the_title_limit_counts_only_what_is_kept():
    title = "t" * 50 + "\u200b" * 10 + "\u202e"
    assert parse_idea(json.dumps({**GOOD, "title": title})).title == "t" * 50


def test_a_title_of_only_invisible_characters_is_rejected():
    with pytest.raises(ReplyParseError, match="title"):
        parse_idea(json.dumps({**GOOD, "title": "\u202e\u200b\u2066\x1b"}))


def test_popcorn_make_prints_and_records_a_clean_idea(tmp_path):
    """Through the real path: an OpenAI-compatible server (a local fake) replies with a
    hostile idea; the printed title, the --json record and record.json are clean and
    the emoji sequence is intact."""
    from click.testing import CliRunner

    from fake_openai_server import FakeOpenAIServer, completion
    from llmpopcorn.cli import main

    family = "👨\u200d👩\u200d👧"
    reply = json.loads(_hostile_reply(ensure_ascii=False))
    reply["title"] = f"\u202eCorgi {HOSTILE}surfs {family}\u2066"
    outputs = {}
    with FakeOpenAIServer() as srv:
        srv.queue(200, completion(json.dumps(reply, ensure_ascii=False)))
        for how in ("human", "json"):
            args = [
                "make", "a corgi learns to surf", "--llm", "openai", "--llm-base-url",
                srv.url, "--llm-model", "m", "--no-score", "--out", str(tmp_path / how),
            ]  # fmt: skip
            result = CliRunner().invoke(
                main,
                [*args, "--json"] if how == "json" else args,
                env={"POPCORN_LLM_API_KEY": "sk-test", "POPCORN_RENDER": "false"},
            )
            assert result.exit_code == 0, result.output
            outputs[how] = result.stdout
    title = f"Corgi surfs {family}"
    assert f"Title:         {title}\n" in outputs["human"]
    record = json.loads(outputs["json"])
    assert record["idea"]["title"] == title
    saved = (Path(record["run_dir"]) / "record.json").read_text(encoding="utf-8")
    assert json.loads(saved)["idea"]["title"] == title
    # the raw reply is kept verbatim in the record, but as \u escapes: no output, the
    # files included, holds a character that could reorder a terminal line
    assert json.loads(saved)["attempts"][0]["reply"] == json.dumps(reply, ensure_ascii=False)
    assert record["attempts"][0]["reply"] == json.dumps(reply, ensure_ascii=False)
    for text in (outputs["human"], outputs["json"], saved):
        assert not (set(HOSTILE) - {"\u200d"}) & set(text)
        assert family in text  # the emoji sequence is shown as it is, not escaped


def test_an_idea_built_elsewhere_is_cleaned_too():
    """The MCP/web callers build an Idea directly, and old record.json files are read
    back through the model: the same cleaning applies."""
    from llmpopcorn.core.types import RunRecord

    idea = Idea(title="\u202eevil\u2066 title", cover_prompt="c\u200b", video_prompt="v\x9b")
    assert (idea.title, idea.cover_prompt, idea.video_prompt) == ("evil title", "c", "v")
    old = RunRecord(
        run_id="r", query="q", mode="basic", seed=1, package_version="0", run_dir="d",
        idea={"title": "a\u202eb", "cover_prompt": "c", "video_prompt": "v"},
    )  # fmt: skip
    assert RunRecord.model_validate_json(old.model_dump_json()).idea.title == "ab"


def test_json_output_escapes_what_strip_unsafe_drops_and_reads_back_the_same():
    from llmpopcorn.core.paths import escape_unsafe_json

    family = "👨\u200d👩\u200d👧"
    data = {"reply": f"a{HOSTILE}b {family} 中文\n\tend", "n": [1, "\u202ex"]}
    text = json.dumps(data, indent=2, ensure_ascii=False)
    escaped = escape_unsafe_json(text)
    assert json.loads(escaped) == data  # nothing lost
    assert not (set(HOSTILE) - {"\u200d"}) & set(escaped)
    assert "\\u202e" in escaped and family in escaped and "中文" in escaped
    assert escaped.count("\n") == text.count("\n")  # the layout is kept
