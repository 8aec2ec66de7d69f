"""OpenAI-compatible servers (issue 25): the answer's schema asked as ``response_format``
(PE keeps a reasoning field first), a refusal of it falls back to parsing once per
backend, and every reply says why it ended, how many tokens it took and how its form
was obtained; a timeout's error carries its reason. Against a real local HTTP server."""

from __future__ import annotations

import json

from fake_openai_server import FakeOpenAIServer, completion
from llmpopcorn.backends.llm.openai_compat import DeepSeekLLM, OpenAICompatLLM, portable_schema
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import ChatRequest, Message
from llmpopcorn.enhance.parsing import idea_json_schema
from llmpopcorn.pipeline.core import Pipeline

IDEA = {"title": "Corgi surf", "cover_prompt": "a corgi", "video_prompt": "it surfs"}


def ask(**kw) -> ChatRequest:
    return ChatRequest(
        messages=[Message(role="user", content="hi")], response_schema=idea_json_schema(), **kw
    )


def llm_for(srv, cls=OpenAICompatLLM) -> OpenAICompatLLM:
    return cls(model="m", base_url=srv.url, api_key="sk-x", max_retries=0)


def test_the_schema_is_asked_as_response_format_in_a_portable_form():
    with FakeOpenAIServer() as srv:
        srv.queue(200, completion(json.dumps(IDEA)))
        done = llm_for(srv).complete(ask())
    sent = srv.requests[-1]["body"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
    schema = sent["json_schema"]["schema"]
    assert schema == portable_schema(idea_json_schema())
    assert schema["required"] == list(schema["properties"]) and not schema["additionalProperties"]
    assert "maxLength" not in json.dumps(schema) and "pattern" not in json.dumps(schema)
    assert (done.method, done.finish_reason) == ("response_format", "stop")
    assert (done.prompt_tokens, done.completion_tokens) == (1, 1)


def test_pe_keeps_its_reasoning_first_inside_the_schema():
    with FakeOpenAIServer() as srv:
        srv.queue(200, completion(json.dumps({"reasoning": "popular ones...", **IDEA})))
        llm_for(srv).complete(ask(reasoning=True))
    schema = srv.requests[-1]["body"]["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"])[0] == "reasoning" and schema["required"][0] == "reasoning"


def test_a_refused_response_format_falls_back_to_parsing_once_per_backend():
    def responder(body):
        if "response_format" in body:
            return 400, {"error": {"message": "response_format json_schema is not supported"}}
        return 200, completion(json.dumps(IDEA))

    with FakeOpenAIServer(responder=responder) as srv:
        llm = llm_for(srv)
        first = llm.complete(ask())
        second = llm.complete(ask())
    bodies = [r["body"] for r in srv.requests]
    assert ["response_format" in b for b in bodies] == [True, False, False]
    assert first.method == second.method == "parse" and first.text == json.dumps(IDEA)


def test_a_provider_with_json_mode_only_is_not_asked_for_a_schema():
    with FakeOpenAIServer() as srv:
        srv.queue(200, completion(json.dumps(IDEA)))
        done = llm_for(srv, DeepSeekLLM).complete(ask())
    assert "response_format" not in srv.requests[-1]["body"] and done.method == "parse"


def _finishing(reason: str, content: str = "", refusal: str | None = None) -> dict:
    body = completion(content)
    body["choices"][0]["finish_reason"] = reason
    if refusal is not None:
        body["choices"][0]["message"]["refusal"] = refusal
    body["usage"] = {"prompt_tokens": 50, "completion_tokens": 77, "total_tokens": 127}
    return body


def test_finish_reasons_are_read_cut_replies_and_refusals_included():
    with FakeOpenAIServer() as srv:
        srv.queue(200, _finishing("length", '{"title": "Corgi'))
        srv.queue(200, _finishing("content_filter"))
        srv.queue(200, _finishing("stop", "", refusal="I can't help with that."))
        llm = llm_for(srv)
        cut, filtered, refused = (llm.complete(ask()) for _ in range(3))
    assert (cut.finish_reason, cut.completion_tokens, cut.prompt_tokens) == ("length", 77, 50)
    assert filtered.finish_reason == "refused"
    assert refused.finish_reason == "refused" and "can't help" in refused.text


def test_a_cut_server_reply_is_reasked_with_twice_the_budget_through_make(tmp_path):
    with FakeOpenAIServer() as srv:
        srv.queue(200, _finishing("length", '{"title": "Corgi'))
        srv.queue(200, completion(json.dumps(IDEA)))
        settings = Settings.resolve(
            env={},
            llm="openai",
            llm_base_url=srv.url,
            llm_api_key="sk-x",
            llm_model="m",
            out_dir=tmp_path,
            render=False,
            score=False,
            max_tokens=300,
        )
        record = Pipeline(settings).make("a corgi learns to surf")
    budgets = [r["body"]["max_tokens"] for r in srv.requests if r["body"]]
    assert budgets == [300, 600]
    assert [a.reason for a in record.attempts] == ["truncated", None]
    assert record.attempts[0].error.startswith("the reply was cut at 77 tokens")
    assert record.attempts[1].method == "response_format"


def test_a_timeout_error_carries_its_reason():
    with FakeOpenAIServer(delay=5.0) as srv:
        srv.queue(200, completion("late"))
        llm = OpenAICompatLLM(
            model="m", base_url=srv.url, api_key="sk-x", max_retries=0, timeout=0.2, deadline=0.5
        )
        try:
            llm.complete(ask())
        except Exception as exc:  # noqa: BLE001 - checked below
            error = exc
    assert getattr(error, "reason", None) == "timeout"
