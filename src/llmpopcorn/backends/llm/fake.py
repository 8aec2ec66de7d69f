"""A fake LLM with queued replies (texts or :class:`Completion` objects), for tests."""

from __future__ import annotations

from collections.abc import Iterable

from llmpopcorn.backends.base import LLM, Availability
from llmpopcorn.core.types import ChatRequest, Completion


class FakeLLM(LLM):
    name = "fake"
    description = "canned replies for tests; replies are consumed in order"

    def __init__(self, replies: Iterable[str | Completion] = (), *, repeat_last: bool = False):
        self.replies = list(replies)
        self.repeat_last = repeat_last
        self.requests: list[ChatRequest] = []

    @classmethod
    def availability(cls, settings=None) -> Availability:
        return Availability(True, "test double: needs replies passed in code")

    def complete(self, request: ChatRequest) -> str | Completion:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError("FakeLLM has no more replies queued")
        if self.repeat_last and len(self.replies) == 1:
            return self.replies[0]
        return self.replies.pop(0)

    def model_id(self) -> str:
        return "fake"
