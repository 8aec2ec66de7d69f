"""A prompt fitted to its LLM (issue 25): PE drops the fewest references needed to fit
the model's context, the least similar first, in the popular/unpopular shares, and says
so; a backend that holds replies to the schema gets no format example."""

from __future__ import annotations

import pytest

from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.core.errors import LLMError
from llmpopcorn.core.types import Prompt, Reference
from llmpopcorn.enhance.fit import MIN_REPLY_TOKENS, fit_prompt, messages_for
from llmpopcorn.enhance.pe import pe_messages
from llmpopcorn.enhance.prompts import BasicPromptBuilder, example_json


class Counting(FakeLLM):
    """A fake with a context window; a token is four characters."""

    def __init__(self, window: int | None, constrained: bool = False):
        super().__init__()
        self.window = window
        self.constrained = constrained

    def context_window(self):
        return self.window

    def count_tokens(self, messages) -> int:
        return sum(len(m.content) for m in messages) // 4


def pe_prompt(n_popular=18, n_unpopular=2) -> Prompt:
    refs = [
        Reference(
            video_id=f"p{i}",
            title=f"popular video number {i} " + "words " * 30,
            label="popular",
            comment_count=100 + i,
            similarity=1.0 - i / 100,
        )
        for i in range(n_popular)
    ] + [
        Reference(
            video_id=f"u{i}",
            title=f"unpopular video number {i} " + "words " * 30,
            label="unpopular",
            comment_count=i,
            similarity=0.9 - i / 100,
        )
        for i in range(n_unpopular)
    ]
    settings = {"categories": [{"name": "Animal", "videos": 40}], "notes": []}
    return Prompt(
        mode="pe",
        query="a corgi learns to surf",
        messages=pe_messages("a corgi learns to surf", refs, ["Animal"]),
        references=refs,
        settings=settings,
    )


def size(prompt: Prompt) -> int:
    return Counting(None).count_tokens(prompt.messages)


def test_a_prompt_that_fits_is_sent_as_built_and_its_size_recorded():
    prompt = pe_prompt()
    fitted = fit_prompt(prompt, Counting(window=size(prompt) + MIN_REPLY_TOKENS))
    assert fitted.messages == prompt.messages and fitted.references == prompt.references
    assert fitted.settings["context"]["prompt_tokens"] == size(prompt)
    assert fit_prompt(prompt, Counting(window=None)) is prompt  # a server: unknown context


def test_pe_drops_the_fewest_least_similar_references_and_says_so():
    prompt = pe_prompt()
    window = size(prompt) + MIN_REPLY_TOKENS - 300  # about five references too long
    fitted = fit_prompt(prompt, Counting(window=window))
    kept = fitted.references
    room = window - MIN_REPLY_TOKENS
    assert size(fitted) <= room
    assert 0 < len(kept) < len(prompt.references)
    # the fewest: one more reference (in the same shares) would not fit
    one_more = messages_for(prompt, _kept_plus_one(prompt, len(kept)), example=True)
    assert Counting(None).count_tokens(one_more) > room
    # the least similar went, the shares stayed (2 of 20 unpopular)
    dropped = {r.video_id for r in prompt.references} - {r.video_id for r in kept}
    assert fitted.settings["context"]["dropped"] == [
        r.video_id for r in prompt.references if r.video_id in dropped
    ]
    popular = [r for r in kept if r.label == "popular"]
    assert [r.video_id for r in popular] == [f"p{i}" for i in range(len(popular))]
    assert sum(r.label == "unpopular" for r in kept) == round(len(kept) * 2 / 20)
    context = fitted.settings["context"]
    assert context["references_asked"] == 20 and context["references_shown"] == len(kept)
    assert context["prompt_tokens"] == size(prompt)
    assert context["prompt_tokens_after"] == size(fitted)
    assert any("did not fit" in note for note in fitted.settings["notes"])
    assert fitted.settings["shown"]["popular"] == len(popular)
    # the messages show exactly the references kept
    assert all(r.title in fitted.messages[1].content for r in kept)
    assert not any(r.video_id in dropped for r in kept)


def _kept_plus_one(prompt: Prompt, count: int) -> list[Reference]:
    from llmpopcorn.enhance.fit import _kept

    return _kept(prompt.references, count + 1)


def test_pe_dropping_lands_in_the_run_record(tmp_path):
    """Through Pipeline.plan: the record keeps the context block and a PE note."""
    import json

    from fakes import draft_pipeline
    from llmpopcorn.core.settings import Settings

    class Builder:
        mode = "pe"

        def build(self, query):
            return pe_prompt()

    good = json.dumps({"title": "T", "cover_prompt": "c", "video_prompt": "v"})
    llm = Counting(window=size(pe_prompt()) + MIN_REPLY_TOKENS - 300)
    llm.replies = [good]
    settings = Settings.resolve(env={}, out_dir=tmp_path, score=False, render=False, mode="pe")
    record = draft_pipeline(settings, llm=llm, prompt_builder=Builder()).make("a corgi")
    assert record.enhancement["context"]["dropped"]
    assert len(record.references) == record.enhancement["context"]["references_shown"] < 20
    assert any(n.startswith("PE: the prompt") and "did not fit" in n for n in record.notes)


def test_a_prompt_that_cannot_fit_names_both_sizes():
    basic = BasicPromptBuilder().build("a corgi learns to surf")
    with pytest.raises(LLMError, match="more than the model's context of 1100"):
        fit_prompt(basic, Counting(window=1100))
    with pytest.raises(LLMError, match="without any reference"):
        fit_prompt(pe_prompt(), Counting(window=MIN_REPLY_TOKENS + 10))


def test_a_smaller_budget_leaves_more_room_for_references():
    prompt = pe_prompt()
    window = size(prompt) + 300
    assert fit_prompt(prompt, Counting(window=window), max_tokens=300).references == (
        prompt.references
    )
    assert len(fit_prompt(prompt, Counting(window=window)).references) < 20


def test_a_constrained_backend_gets_no_format_example():
    basic = BasicPromptBuilder().build("a corgi learns to surf")
    assert example_json() in basic.messages[1].content
    plain = fit_prompt(basic, Counting(window=None, constrained=True))
    assert example_json() not in plain.messages[1].content
    assert "This example answers" not in plain.messages[1].content
    assert plain.messages[1].content.endswith("keys.")  # the sentence that asks for JSON
    pe = fit_prompt(pe_prompt(), Counting(window=None, constrained=True))
    assert example_json() not in pe.messages[1].content
    assert "popular video number 0" in pe.messages[1].content
    # everyone else gets the paper's prompt as it was
    assert fit_prompt(basic, Counting(window=None)).messages == basic.messages
