"""Ideation: ask the LLM for an idea, validate it, re-ask with feedback when invalid."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llmpopcorn.backends.base import LLM
from llmpopcorn.core.errors import InvalidReplyError
from llmpopcorn.core.types import Attempt, ChatRequest, Idea, Message, Prompt
from llmpopcorn.enhance.parsing import ReplyParseError, parse_idea
from llmpopcorn.enhance.prompts import retry_message

log = logging.getLogger(__name__)


@dataclass
class IdeationResult:
    idea: Idea
    messages: list[Message]
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int | None = 42
    max_tokens: int = 1024
    max_attempts: int = 3


def ideate(
    llm: LLM,
    prompt: Prompt,
    params: SamplingParams,
    *,
    check: Callable[[Idea], str | None] | None = None,
) -> IdeationResult:
    """Ask ``llm`` for an idea until one validates or ``params.max_attempts`` run out.

    ``check`` may reject a valid idea with a reason (the copy check); the reason is
    fed back like a schema error. It is not consulted on the last attempt, which
    would leave no turn to act on it: a valid idea is then kept, and the checker's
    own report says what it found. On failure raises :class:`InvalidReplyError`
    carrying every attempt so the caller can record the raw replies.
    """
    messages = list(prompt.messages)
    attempts: list[Attempt] = []
    context = {
        **prompt.context,
        "query": prompt.query,
        "mode": prompt.mode,
        "references": [r.model_dump() for r in prompt.references],
    }
    for number in range(1, params.max_attempts + 1):
        request = ChatRequest(
            messages=messages,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            max_tokens=params.max_tokens,
            context={**context, "attempt": number},
        )
        started = time.perf_counter()
        reply = llm.complete(request)
        seconds = round(time.perf_counter() - started, 4)
        try:
            idea = parse_idea(reply)
            problem = check(idea) if check and number < params.max_attempts else None
            if problem:
                raise ReplyParseError(problem)
        except ReplyParseError as exc:
            log.info("attempt %d rejected: %s", number, exc)
            attempts.append(Attempt(reply=reply, error=str(exc), seconds=seconds))
            messages = [
                *messages,
                Message(role="assistant", content=reply),
                retry_message(str(exc)),
            ]
            continue
        attempts.append(Attempt(reply=reply, seconds=seconds))
        return IdeationResult(idea=idea, messages=messages, attempts=attempts)
    last = attempts[-1].error if attempts else "no attempt made"
    raise InvalidReplyError(
        f"the LLM gave no valid idea in {params.max_attempts} attempt(s); last problem: {last}",
        "try another model or raise --max-attempts; the raw replies are in the run record",
        attempts=attempts,
    )
