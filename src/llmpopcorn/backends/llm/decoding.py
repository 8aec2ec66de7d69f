"""What local runtimes share when they decode a reply: the grammar that holds it to the
answer's schema (llguidance, built into onnxruntime-genai and a package for the
transformers runtime), the reasoning budget, the repetition penalty and the deadline
between token steps.

The grammar: a request with ``response_schema`` gets that JSON schema, compact (no free
whitespace: fewer tokens and no runs of blank lines); a request with ``reasoning`` (PE's
chain of thought) gets free text first, then the JSON answer held to the schema. The text
before the answer contains no ``{`` (so the answer starts at the first one) and is
bounded in tokens, so the answer always comes within the reply's budget.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmpopcorn.core.types import ChatRequest

#: tokens a constrained answer may need at most (its strings are bounded, see
#: llmpopcorn.enhance.parsing.idea_json_schema): the reasoning leaves this much room
ANSWER_TOKENS = 700
#: default tokens of reasoning before a PE answer on a local model
REASONING_TOKENS = 256
#: llguidance's options for the JSON answer
COMPACT = {"whitespace_flexible": False}
#: a small model loops ("a corgi learns to surf a corgi learns to surf ..."): the logit
#: of a token the reply already used is divided by this (multiplied when negative), as
#: transformers' repetition_penalty does, but over the reply's own tokens only (over the
#: prompt too, it garbled PE replies, whose prompt holds most common words). SmolLM2-135M,
#: basic prompt, 6 seeds: 3 of 6 valid replies without it (captions repeating a prompt,
#: up to 1,248 tokens of loop), 6 of 6 with 1.1, 90-200 tokens each
REPETITION_PENALTY = 1.1

Clock = Callable[[], float]


def reasoning_budget(request: ChatRequest, wanted: int = REASONING_TOKENS) -> int:
    """Tokens of reasoning before the answer: ``wanted``, less when the reply's budget
    (``max_tokens``) leaves under :data:`ANSWER_TOKENS` for the answer; at least 1."""
    return max(1, min(wanted, request.max_tokens - ANSWER_TOKENS))


def grammar(request: ChatRequest, reasoning_tokens: int = REASONING_TOKENS) -> tuple[str, str]:
    """``(kind, text)`` for llguidance: ``("json_schema", schema)`` or, when the request
    lets the model reason first, ``("lark_grammar", grammar)``. The request must carry a
    ``response_schema``."""
    if not request.response_schema:
        raise ValueError("the request asks for no schema")
    schema = {**request.response_schema, "x-guidance": COMPACT}
    if not request.reasoning:
        return "json_schema", json.dumps(schema)
    budget = reasoning_budget(request, reasoning_tokens)
    lark = (
        'start: thinking "\\n" answer\n'
        f"thinking[max_tokens={budget}]: /[^{{]+/\n"
        f"answer: %json {json.dumps(schema)}\n"
    )
    return "lark_grammar", lark


@dataclass
class Deadline:
    """A call's deadline on an injectable clock (tests move time without sleeping)."""

    seconds: float
    clock: Clock = time.monotonic

    def __post_init__(self) -> None:
        self.at = self.clock() + self.seconds

    def passed(self) -> bool:
        return self.clock() >= self.at


def penalise(logits: np.ndarray, used: Iterable[int], penalty: float) -> np.ndarray:
    """``logits`` (the last axis is the vocabulary) with the tokens in ``used`` penalised
    in place (see :data:`REPETITION_PENALTY`); returned for convenience."""
    if penalty == 1.0:
        return logits
    ids = np.fromiter(set(used), dtype=np.int64)
    if len(ids):
        row = logits.reshape(-1, logits.shape[-1])
        picked = row[:, ids]
        row[:, ids] = np.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def grammar_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the grammar engine refusing a sampled token (not another error)."""
    text = str(exc)
    return "satisfy the grammar" in text or "Parser Error" in text


def finish(
    tokens: list[int], eos: set[int], max_tokens: int, timed_out: bool, stopped: bool = False
) -> str:
    """Why a local generation ended, in the OpenAI vocabulary (plus ``timeout``)."""
    if timed_out:
        return "timeout"
    if stopped or (tokens and tokens[-1] in eos):
        return "stop"
    return "length" if len(tokens) >= max_tokens else "stop"


def chat_messages(request_messages: list[Any]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in request_messages]
