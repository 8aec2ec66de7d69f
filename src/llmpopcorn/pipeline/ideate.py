"""Ideation: ask the LLM for an idea, validate it, re-ask with feedback when invalid.

Every request carries the answer's JSON schema (:func:`~llmpopcorn.enhance.parsing.
idea_json_schema`) and, in PE mode, leave to reason before the answer: a backend that
can hold its reply to the schema does (local constrained decoding, a server's
``response_format``); any other reply is parsed and validated. Every round trip is an
:class:`Attempt` saying why it was rejected (``reason``, the team's vocabulary: parse,
copy, duplicate, truncated, timeout, refused), why the model stopped, its seed, how its
form was obtained, its token budget and counts.

* A re-ask samples with a new seed (:func:`attempt_seed`): a local model given the same
  seed would give the same reply.
* A reply cut at its token budget is its own error ("the reply was cut at N tokens") and
  is re-asked once with twice the budget where the model's context allows it.
* A call that reached its deadline, or a refusal, ends ideation at once (a re-ask would
  cost another deadline, or be refused again).
* The budget: ``max_tokens``, else the mode's default (1024 basic, 5000 PE as in the
  paper), within the model's context where the backend knows it (counted with its
  tokenizer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llmpopcorn.backends.base import LLM
from llmpopcorn.core.errors import InvalidReplyError, LLMError
from llmpopcorn.core.types import (
    GRAMMAR_FAULT,
    Attempt,
    ChatRequest,
    Completion,
    Idea,
    Message,
    Prompt,
)
from llmpopcorn.enhance.fit import reply_tokens
from llmpopcorn.enhance.parsing import ReplyParseError, idea_json_schema, parse_idea
from llmpopcorn.enhance.prompts import retry_message

log = logging.getLogger(__name__)

#: attempt n samples with seed + SEED_STEP * (n - 1): a prime well above any variant
#: count, so an attempt's seed never meets another variant's (seed, seed + 1, ...)
SEED_STEP = 7919
#: the smallest budget worth asking for (below it, the prompt leaves no room to answer)
MIN_BUDGET = 16


def attempt_seed(seed: int | None, number: int) -> int | None:
    return None if seed is None else seed + SEED_STEP * (number - 1)


class Problem(str):
    """A check's verdict with its reason (``copy`` or ``duplicate``); a check that
    returns a plain string is counted as ``copy``."""

    reason: str

    def __new__(cls, text: str, reason: str = "copy") -> Problem:
        problem = super().__new__(cls, text)
        problem.reason = reason
        return problem


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
    #: None: the mode's default (see :func:`llmpopcorn.enhance.fit.reply_tokens`)
    max_tokens: int | None = None
    max_attempts: int = 3


def fit_budget(llm: LLM, messages: list[Message], wanted: int) -> int:
    """``wanted`` tokens, or what the model's context leaves after ``messages``."""
    window = llm.context_window()
    if window is None:
        return wanted
    used = llm.count_tokens(messages) or 0
    if window - used < MIN_BUDGET:
        raise LLMError(
            f"the prompt takes {used} tokens of the model's {window}: no room for a reply",
            "use a model with a longer context, or fewer references (--refs)",
        )
    return min(wanted, window - used)


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
    schema = idea_json_schema(post_text=prompt.post_text)
    budget = reply_tokens(prompt.mode, params.max_tokens)
    grown = False
    for number in range(1, params.max_attempts + 1):
        seed = attempt_seed(params.seed, number)
        max_tokens = fit_budget(llm, messages, budget)
        request = ChatRequest(
            messages=messages,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=seed,
            max_tokens=max_tokens,
            # which variant asks (a re-ask samples with another seed) and which attempt
            context={**context, "attempt": number, "variant_seed": params.seed},
            response_schema=schema,
            reasoning=prompt.mode == "pe",
        )
        started = time.perf_counter()
        done = Completion.of(llm.complete(request))
        attempt = Attempt(
            reply=done.text,
            seconds=round(time.perf_counter() - started, 4),
            finish_reason=done.finish_reason,
            seed=seed,
            method=done.method,
            max_tokens=max_tokens,
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
        )
        attempts.append(attempt)
        try:
            idea = parse_idea(done.text)
        except ReplyParseError as exc:
            reason, error = _why(done, max_tokens, exc)
            attempt.reason, attempt.error = reason, error
            log.info("attempt %d rejected (%s): %s", number, reason, error)
            if reason in ("timeout", "refused"):
                break
            if reason == "truncated":
                if not grown and (llm.context_window() is None or max_tokens == budget):
                    budget, grown = max_tokens * 2, True  # once; the context caps it
                continue  # the same conversation, a new seed (the cut reply is not shown)
            messages = _reask(messages, done.text, error, prompt.post_text)
            continue
        problem = check(idea) if check and number < params.max_attempts else None
        if problem:
            attempt.reason = getattr(problem, "reason", "copy")
            attempt.error = str(problem)
            log.info("attempt %d rejected (%s): %s", number, attempt.reason, problem)
            messages = _reask(messages, done.text, problem, prompt.post_text)
            continue
        return IdeationResult(idea=idea, messages=messages, attempts=attempts)
    last = attempts[-1]
    raise InvalidReplyError(
        f"the LLM gave no valid idea in {len(attempts)} attempt(s); last problem: {last.error}",
        _HINTS.get(last.reason or "", _HINTS["parse"]),
        attempts=attempts,
    )


_HINTS = {
    "parse": "try another model or raise --max-attempts; the raw replies are in the run record",
    "truncated": "raise --max-tokens (or use a model with a longer context); the raw replies "
    "are in the run record",
    "timeout": "raise --llm-deadline, or use a faster model or machine",
    "refused": "the model or provider refused: rephrase the query or use another model",
}


def _reask(messages: list[Message], reply: str, problem: str, post_text: bool) -> list[Message]:
    """The conversation with the rejected reply and what was wrong with it."""
    retry = retry_message(problem, post_text=post_text)
    return [*messages, Message(role="assistant", content=reply), retry]


def _why(done: Completion, max_tokens: int, exc: ReplyParseError) -> tuple[str, str]:
    """The reason and the message of an unusable reply: why the model stopped explains
    it better than the parser when it was cut, out of time or refused."""
    tokens = done.completion_tokens or max_tokens
    if done.finish_reason == "length":
        return "truncated", f"the reply was cut at {tokens} tokens, before the answer ended"
    if done.finish_reason == "timeout":
        return "timeout", f"the model reached the call's deadline after {tokens} tokens"
    if done.finish_reason == "refused":
        return "refused", "the model refused to answer (a refusal or content filter)"
    if done.finish_reason == GRAMMAR_FAULT:
        return "parse", (
            f"the local model's constrained decoder stopped the reply after {tokens} tokens "
            "(it refused a token sampled under its own mask: a fault of the grammar engine)"
        )
    return "parse", str(exc)


def failure_reason(exc: BaseException) -> str:
    """``RunRecord.failure`` for an exception raised while ideating: the last attempt's
    reason, else the error's own ``reason`` (an LLM backend's timeout), else ``error``."""
    attempts = getattr(exc, "attempts", None) or []
    if attempts and attempts[-1].reason:
        return attempts[-1].reason
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return getattr(exc, "reason", None) or "error"
