import json

import pytest

from fake_openai_server import FakeOpenAIServer, completion
from llmpopcorn.backends.llm.openai_compat import DeepSeekLLM, OllamaLLM, OpenAICompatLLM
from llmpopcorn.core.errors import ConfigError, LLMError
from llmpopcorn.core.registry import registry
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import ChatRequest, Message
from llmpopcorn.pipeline.core import Pipeline

SECRET = "sk-test-never-print-me"
IDEA = {"title": "Corgi surf", "cover_prompt": "a corgi", "video_prompt": "it surfs"}


def request(**kw):
    return ChatRequest(messages=[Message(role="user", content="hi")], **kw)


def test_sends_the_papers_sampling_and_returns_content():
    with FakeOpenAIServer() as srv:
        srv.queue(200, completion("hello"))
        llm = OpenAICompatLLM(model="m", base_url=srv.url, api_key=SECRET, max_retries=0)
        done = llm.complete(request(temperature=0.7, top_p=0.9, seed=42, max_tokens=77))
        assert done.text == "hello"
        (req,) = srv.chat_requests
        body = req["body"]
        assert body["model"] == "m" and body["messages"] == [{"role": "user", "content": "hi"}]
        assert (body["temperature"], body["top_p"], body["seed"], body["max_tokens"]) == (
            0.7,
            0.9,
            42,
            77,
        )
        assert req["headers"]["authorization"] == f"Bearer {SECRET}"


def test_retries_transient_errors_then_succeeds():
    with FakeOpenAIServer() as srv:
        srv.queue(500, {"error": {"message": "boom"}}).queue(429, {"error": {"message": "slow"}})
        srv.queue(200, completion("ok"))
        llm = OpenAICompatLLM(model="m", base_url=srv.url, api_key="k", max_retries=3)
        assert llm.complete(request()).text == "ok"
        assert len(srv.chat_requests) == 3


def test_gives_up_after_bounded_retries():
    with FakeOpenAIServer() as srv:
        srv.queue(503, {"error": {"message": "down"}})
        llm = OpenAICompatLLM(model="m", base_url=srv.url, api_key="k", max_retries=1)
        with pytest.raises(LLMError, match="HTTP 503"):
            llm.complete(request())
        assert len(srv.chat_requests) == 2  # one try + one retry, no more


@pytest.mark.parametrize(
    "status, match, hint",
    [
        (401, "rejected the API key", "POPCORN_LLM_API_KEY"),
        (404, "not found", "--llm-model"),
    ],
)
def test_auth_and_not_found_fail_at_once_without_leaking_the_key(status, match, hint):
    with FakeOpenAIServer() as srv:
        srv.queue(status, {"error": {"message": f"bad key {SECRET}"}})
        llm = DeepSeekLLM(model="m", base_url=srv.url, api_key=SECRET, max_retries=3)
        with pytest.raises(LLMError, match=match) as info:
            llm.complete(request())
        assert len(srv.chat_requests) == 1  # no retry on 401/404
        assert hint in info.value.hint
        assert SECRET not in str(info.value) and SECRET not in info.value.hint


def test_other_status_errors_scrub_the_key():
    with FakeOpenAIServer() as srv:
        srv.queue(400, {"error": {"message": f"echo {SECRET}"}})
        llm = OpenAICompatLLM(model="m", base_url=srv.url, api_key=SECRET, max_retries=0)
        with pytest.raises(LLMError) as info:
            llm.complete(request())
        assert "HTTP 400" in str(info.value) and SECRET not in str(info.value)


def test_connection_refused_names_the_url():
    llm = OpenAICompatLLM(
        model="m", base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0, timeout=2
    )
    with pytest.raises(LLMError, match="cannot connect to http://127.0.0.1:9/v1"):
        llm.complete(request())


def test_missing_key_is_a_config_error_naming_the_variables():
    llm = DeepSeekLLM(model="deepseek-chat")
    with pytest.raises(ConfigError) as info:
        llm.complete(request())
    assert "DEEPSEEK_API_KEY" in info.value.hint and "POPCORN_LLM_API_KEY" in info.value.hint


def test_local_server_model_is_discovered_when_it_serves_one():
    with FakeOpenAIServer(models=["only-model"]) as srv:
        srv.queue(200, completion("x"))
        llm = OllamaLLM(base_url=srv.url)
        llm.complete(request())
        assert srv.chat_requests[0]["body"]["model"] == "only-model"
    with FakeOpenAIServer(models=["a", "b"]) as srv:
        with pytest.raises(ConfigError, match="serves: a, b"):
            OllamaLLM(base_url=srv.url).complete(request())


def test_presets_and_provider_key_variable(monkeypatch):
    monkeypatch.setenv("DEEPSEEK_API_KEY", "from-provider-var")
    llm = registry.create("llm", "deepseek", Settings.resolve())
    assert llm.base_url == "https://api.deepseek.com" and llm.model_id() == "deepseek-chat"
    assert llm._api_key == "from-provider-var"
    monkeypatch.setenv("POPCORN_LLM_API_KEY", "popcorn-var-wins")
    assert registry.create("llm", "deepseek", Settings.resolve())._api_key == "popcorn-var-wins"
    assert "popcorn-var-wins" not in json.dumps(llm.describe().model_dump())


def test_full_pipeline_against_the_server_with_a_bad_first_reply(out_dir, monkeypatch):
    monkeypatch.setenv("POPCORN_LLM_API_KEY", SECRET)
    with FakeOpenAIServer() as srv:
        srv.queue(200, completion("<think>hmm</think> not json"))
        srv.queue(200, completion("```json\n" + json.dumps(IDEA) + "\n```"))
        settings = Settings.resolve(
            {"llm": "openai", "llm_base_url": srv.url, "llm_model": "m", "out_dir": str(out_dir)},
            score=False,
        )
        record = Pipeline(settings).make("a corgi learns to surf")
        assert record.idea.title == "Corgi surf" and len(record.attempts) == 2
        assert record.backends["llm"].model == "m" and record.backends["llm"].is_llm is True
        second = srv.chat_requests[1]["body"]["messages"]
        assert second[-1]["role"] == "user" and "could not be used" in second[-1]["content"]
        text = (out_dir.resolve() / record.run_dir.split("/")[-1] / "record.json").read_text()
        assert SECRET not in text and record.settings["llm_base_url"] == srv.url


OPENAI_QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}
DEEPSEEK_BALANCE = {"error": {"message": "Insufficient Balance", "type": "unknown_error"}}


@pytest.mark.parametrize("status, body", [(429, OPENAI_QUOTA), (402, DEEPSEEK_BALANCE)])
def test_a_used_up_quota_fails_at_once_and_a_batch_recognises_it(status, body):
    import pickle

    from llmpopcorn.runs.driver import is_quota_error

    with FakeOpenAIServer() as srv:
        srv.queue(status, body)
        llm = OpenAICompatLLM(model="m", base_url=srv.url, api_key=SECRET, max_retries=3)
        with pytest.raises(LLMError, match="quota or balance .* is used up") as info:
            llm.complete(request())
        assert len(srv.chat_requests) == 1  # waiting does not refill a balance
    assert "--resume" in info.value.hint and "another key" in info.value.hint
    assert is_quota_error(info.value)
    assert is_quota_error(pickle.loads(pickle.dumps(info.value)))  # as a Ray worker sends it


def test_an_ordinary_rate_limit_is_still_retried():
    limited = {"error": {"message": "Rate limit reached for m on requests per min (RPM)",
                         "type": "requests", "code": "rate_limit_exceeded"}}  # fmt: skip
    with FakeOpenAIServer() as srv:
        srv.queue(429, limited).queue(429, limited).queue(200, completion("ok"))
        llm = OpenAICompatLLM(model="m", base_url=srv.url, api_key="k", max_retries=3)
        assert llm.complete(request()).text == "ok"
        assert len(srv.chat_requests) == 3
    with FakeOpenAIServer() as srv:  # and, retries spent, it is not taken for a quota
        srv.queue(429, limited)
        llm = OpenAICompatLLM(model="m", base_url=srv.url, api_key="k", max_retries=1)
        with pytest.raises(LLMError, match="rate limited") as info:
            llm.complete(request())
        assert len(srv.chat_requests) == 2
    from llmpopcorn.runs.driver import is_quota_error

    assert not is_quota_error(info.value)


def test_requests_reuse_their_threads_and_a_stalled_one_holds_up_no_other():
    import threading
    import time

    from llmpopcorn.backends.llm.openai_compat import _REQUEST_THREADS, RequestThreads

    with FakeOpenAIServer() as srv:
        srv.queue(200, completion("ok"))
        llm = OpenAICompatLLM(model="m", base_url=srv.url, api_key="k", max_retries=0)
        llm.complete(request())
        started = _REQUEST_THREADS.started
        for _ in range(5):  # one after another: the idle thread is reused
            assert llm.complete(request()).text == "ok"
        assert _REQUEST_THREADS.started == started
    threads = RequestThreads(idle_s=0.2)
    release = threading.Event()
    stalled = threads.run(lambda: release.wait(300))
    quick = threads.run(lambda: None)  # the busy thread is not waited for
    # the bounds below only stop a broken test: a busy machine may take seconds
    assert quick.acquire(timeout=60) and not stalled.acquire(timeout=0)
    assert threads.started == 2
    release.set()
    assert stalled.acquire(timeout=60)
    deadline = time.monotonic() + 60
    while threads._idle and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not threads._idle  # idle threads end after idle_s
    assert threads.run(lambda: None).acquire(timeout=60) and threads.started == 3


def test_a_reply_that_is_json_of_another_shape_or_not_json_is_a_clear_error():
    with FakeOpenAIServer() as srv:
        srv.queue_raw(200, '{"choices": [{"message": {"content": "fine"}}]}', "application/json")
        llm = OpenAICompatLLM(model="m", base_url=srv.url, api_key="k", max_retries=0)
        assert llm.complete(request()).text == "fine"  # a plain dict is read as it is
    with FakeOpenAIServer() as srv:
        srv.queue_raw(200, "{not json", "application/json")
        llm = OpenAICompatLLM(model="m", base_url=srv.url, api_key="k", max_retries=0)
        with pytest.raises(LLMError, match="text that is not JSON"):
            llm.complete(request())
