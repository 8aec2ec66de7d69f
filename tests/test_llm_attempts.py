"""What each ideation attempt records and how a rejected reply is re-asked (issue 25):
a new seed per re-ask, a cut reply as its own error re-asked once with a larger budget,
a deadline or refusal ends ideation, the budget fits the model's context, and the
failed run's record says why and which LLM it asked."""

from __future__ import annotations

import json

import pytest

from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.core.errors import InvalidReplyError, LLMError
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import Completion, Prompt, Reference
from llmpopcorn.enhance.parsing import idea_json_schema, parse_idea
from llmpopcorn.enhance.prompts import BasicPromptBuilder
from llmpopcorn.pipeline.ideate import (
    SEED_STEP,
    Problem,
    SamplingParams,
    attempt_seed,
    failure_reason,
    ideate,
)

GOOD = json.dumps(
    {"title": "Corgi surf", "cover_prompt": "a corgi on a board", "video_prompt": "it rides"}
)
CUT = '{"title": "Corgi surf", "cover_prompt": "a corgi on a bo'


def basic(query="a corgi learns to surf") -> Prompt:
    return BasicPromptBuilder().build(query)


class WindowLLM(FakeLLM):
    """A fake that knows its context: a token is four characters of the messages."""

    def __init__(self, replies, window: int):
        super().__init__(replies)
        self.window = window

    def context_window(self) -> int:
        return self.window

    def count_tokens(self, messages) -> int:
        return sum(len(m.content) for m in messages) // 4


def test_each_reask_samples_with_a_new_seed_and_records_it():
    llm = FakeLLM(["no json", "still none", GOOD])
    result = ideate(llm, basic(), SamplingParams(seed=42, max_attempts=3))
    seeds = [r.seed for r in llm.requests]
    assert seeds == [42, 42 + SEED_STEP, 42 + 2 * SEED_STEP] == [a.seed for a in result.attempts]
    assert len(set(seeds)) == 3
    # an attempt's seed never meets another variant's (variants use seed, seed+1, ...)
    assert all(attempt_seed(42, n) not in range(42, 42 + 50) for n in (2, 3))
    assert [a.reason for a in result.attempts] == ["parse", "parse", None]
    assert attempt_seed(None, 3) is None


def test_requests_carry_the_schema_and_pe_may_reason_first():
    llm = FakeLLM([GOOD])
    ideate(llm, basic(), SamplingParams())
    request = llm.requests[0]
    assert request.response_schema == idea_json_schema() and request.reasoning is False
    pe = basic().model_copy(update={"mode": "pe"})
    llm = FakeLLM([GOOD])
    ideate(llm, pe, SamplingParams())
    assert llm.requests[0].reasoning is True


def test_the_schema_is_derived_from_the_idea_and_bounds_every_string():
    schema = idea_json_schema()
    from llmpopcorn.core.types import Idea

    assert set(schema["properties"]) == set(Idea.model_fields)
    assert schema["required"] == list(schema["properties"])
    assert schema["additionalProperties"] is False
    title = schema["properties"]["title"]
    assert title["minLength"] >= 1 and title["maxLength"] == 50
    for spec in schema["properties"].values():
        strings = [spec] if spec["type"] == "string" else [spec["items"]]
        for s in strings:
            assert s["minLength"] >= 3 and s["maxLength"] and s["pattern"].startswith("^")


def test_method_finish_reason_budget_and_tokens_are_recorded():
    done = Completion(
        text=GOOD, finish_reason="stop", prompt_tokens=120, completion_tokens=40, method="schema"
    )
    result = ideate(FakeLLM([done]), basic(), SamplingParams(max_tokens=300))
    attempt = result.attempts[0]
    assert (attempt.method, attempt.finish_reason, attempt.reason) == ("schema", "stop", None)
    assert (attempt.max_tokens, attempt.prompt_tokens, attempt.completion_tokens) == (300, 120, 40)
    # a plain string from a simple backend: parsed, finish unknown
    plain = ideate(FakeLLM([GOOD]), basic(), SamplingParams()).attempts[0]
    assert (plain.method, plain.finish_reason) == ("parse", None)


def test_a_cut_reply_is_its_own_error_and_is_reasked_once_with_twice_the_budget():
    cut = Completion(text=CUT, finish_reason="length", completion_tokens=64)
    llm = FakeLLM([cut, cut, GOOD])
    result = ideate(llm, basic(), SamplingParams(max_tokens=64, max_attempts=3))
    first, second, third = result.attempts
    assert first.reason == "truncated" and first.error.startswith("the reply was cut at 64 tokens")
    assert "no JSON object" not in first.error
    assert [r.max_tokens for r in llm.requests] == [64, 128, 128]  # grown once only
    # the cut reply is not fed back: the same conversation, a new seed
    assert all(len(r.messages) == 2 for r in llm.requests)
    assert len({r.seed for r in llm.requests}) == 3
    assert second.reason == "truncated" and third.reason is None


def test_a_cut_reply_that_still_holds_a_valid_answer_is_kept():
    done = Completion(text=GOOD + "\nAnd another thing", finish_reason="length")
    result = ideate(FakeLLM([done]), basic(), SamplingParams())
    assert result.idea.title == "Corgi surf" and result.attempts[0].reason is None


def test_the_budget_is_not_grown_past_the_models_context():
    cut = Completion(text=CUT, finish_reason="length")
    prompt = basic()
    used = sum(len(m.content) for m in prompt.messages) // 4
    llm = WindowLLM([cut, GOOD], window=used + 100)
    result = ideate(llm, prompt, SamplingParams(max_tokens=500))
    assert [r.max_tokens for r in llm.requests] == [100, 100]  # the context caps it
    assert result.attempts[0].reason == "truncated"


def test_default_budgets_follow_the_mode_within_the_context():
    llm = FakeLLM([GOOD])
    ideate(llm, basic(), SamplingParams())
    assert llm.requests[0].max_tokens == 1024
    llm = FakeLLM([GOOD])
    ideate(llm, basic().model_copy(update={"mode": "pe"}), SamplingParams())
    assert llm.requests[0].max_tokens == 5000  # the paper's
    prompt = basic()
    used = sum(len(m.content) for m in prompt.messages) // 4
    llm = WindowLLM([GOOD], window=used + 3000)
    ideate(llm, prompt.model_copy(update={"mode": "pe"}), SamplingParams())
    assert llm.requests[0].max_tokens == 3000
    with pytest.raises(LLMError, match="no room for a reply"):
        ideate(WindowLLM([GOOD], window=used + 2), prompt, SamplingParams())


@pytest.mark.parametrize("finish", ["timeout", "refused"])
def test_a_deadline_or_a_refusal_ends_ideation(finish):
    llm = FakeLLM([Completion(text='{"title": "Cor', finish_reason=finish), GOOD])
    with pytest.raises(InvalidReplyError) as info:
        ideate(llm, basic(), SamplingParams(max_attempts=3))
    assert len(llm.requests) == 1
    assert [a.reason for a in info.value.attempts] == [finish]
    assert failure_reason(info.value) == finish
    hint = info.value.hint
    assert ("--llm-deadline" in hint) if finish == "timeout" else ("refused" in hint)


def test_check_problems_carry_their_reason():
    calls = iter([Problem("too close to another variant", "duplicate"), "copies a reference", None])
    llm = FakeLLM([GOOD, GOOD, GOOD])
    result = ideate(llm, basic(), SamplingParams(max_attempts=3), check=lambda idea: next(calls))
    assert [a.reason for a in result.attempts] == ["duplicate", "copy", None]
    assert "too close to another variant" in llm.requests[1].messages[-1].content


def test_failure_reason_of_errors_without_attempts():
    timeout = LLMError("no answer")
    timeout.reason = "timeout"
    assert failure_reason(timeout) == "timeout"
    assert failure_reason(LLMError("boom")) == "error"
    assert failure_reason(KeyboardInterrupt()) == "interrupted"


def test_a_failed_run_records_why_and_which_llm(tmp_path):
    from fakes import draft_pipeline

    settings = Settings.resolve(env={}, out_dir=tmp_path, score=False, max_attempts=2)
    llm = FakeLLM([Completion(text=CUT, finish_reason="length", completion_tokens=9)] * 2)
    pipeline = draft_pipeline(settings, llm=llm)
    with pytest.raises(InvalidReplyError):
        pipeline.make("a corgi learns to surf")
    record = json.loads(next(tmp_path.glob("*/record.json")).read_text())
    assert record["status"] == "failed" and record["failure"] == "truncated"
    assert record["backends"]["llm"]["name"] == "fake"
    assert [a["reason"] for a in record["attempts"]] == ["truncated", "truncated"]


def test_a_run_failing_before_the_llm_is_asked_still_names_it(tmp_path):
    from fakes import draft_pipeline

    class Broken(FakeLLM):
        def context_window(self):
            raise LLMError("the model would not load")

    settings = Settings.resolve(env={}, out_dir=tmp_path, score=False)
    with pytest.raises(LLMError):
        draft_pipeline(settings, llm=Broken([GOOD])).make("a corgi")
    record = json.loads(next(tmp_path.glob("*/record.json")).read_text())
    assert record["backends"]["llm"]["name"] == "fake" and record["failure"] == "error"


def test_parse_accepts_what_the_schema_allows():
    reply = {
        "title": "Corgi surf",
        "cover_prompt": "a corgi on a board",
        "video_prompt": "it rides a wave",
        "caption": "Our corgi finally caught a wave!",
        "hashtags": ["#Corgi", "#Surf"],
    }
    idea = parse_idea("Reasoning first, no braces here.\n" + json.dumps(reply))
    assert idea.caption and idea.hashtags == ["#Corgi", "#Surf"]


def test_references_survive_in_context_for_stand_ins():
    ref = Reference(video_id="1", title="t")
    prompt = basic().model_copy(update={"references": [ref]})
    llm = FakeLLM([GOOD])
    ideate(llm, prompt, SamplingParams())
    assert llm.requests[0].context["references"][0]["video_id"] == "1"
