"""A prompt fitted to the LLM that will read it.

Two things depend on the model, not on the query:

* **The format example.** A backend that holds its reply to the answer's schema
  (``llm.constrained``: ``--llm local``) gets the prompt without the example answer (the
  schema already fixes the format, and a small model copies the example).
* **The context.** The prompt is counted with the model's own tokenizer; when it does
  not leave room for the reply (the reply's budget, at most :data:`MIN_REPLY_TOKENS` of
  it: PE's 5,000 shrinks first), PE drops the fewest references needed, the least
  similar to the query first, keeping the popular/unpopular shares, and says so in the
  enhancement's ``context`` and notes (the run record keeps them). A prompt that cannot
  be made to fit is an error naming both sizes. Backends that do not know their context
  (a remote server) are sent the prompt as built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmpopcorn.core.errors import LLMError
from llmpopcorn.core.types import Message, Prompt, Reference
from llmpopcorn.enhance.prompts import basic_messages

if TYPE_CHECKING:  # pragma: no cover
    from llmpopcorn.backends.base import LLM

#: the reply's budget when none is set: 1024 tokens in basic mode, 5000 in PE (the paper's)
DEFAULT_MAX_TOKENS = {"basic": 1024, "pe": 5000}
#: the room a reply keeps before any reference is dropped (or its whole budget if smaller)
MIN_REPLY_TOKENS = 1024


def reply_tokens(mode: str, max_tokens: int | None) -> int:
    """A reply's token budget: ``max_tokens``, else the mode's default."""
    return max_tokens or DEFAULT_MAX_TOKENS.get(mode, DEFAULT_MAX_TOKENS["basic"])


def messages_for(prompt: Prompt, references: list[Reference], example: bool) -> list[Message]:
    """The prompt's messages rebuilt with ``references``, with or without the example, and
    asking for the fields ``prompt.post_text`` says."""
    if prompt.mode == "pe":
        from llmpopcorn.enhance.pe import pe_messages  # numpy: not at start-up

        names = [c["name"] for c in prompt.settings.get("categories", [])]
        return pe_messages(
            prompt.query, references, names, example=example, post_text=prompt.post_text
        )
    return basic_messages(prompt.query, example=example, post_text=prompt.post_text)


def fit_prompt(prompt: Prompt, llm: LLM, max_tokens: int | None = None) -> Prompt:
    """``prompt`` as ``llm`` should get it (see the module docstring)."""
    example = not getattr(llm, "constrained", False)
    if not example:
        prompt = prompt.model_copy(
            update={"messages": messages_for(prompt, prompt.references, example=False)}
        )
    window = llm.context_window()
    if window is None:
        return prompt
    reply = min(reply_tokens(prompt.mode, max_tokens), MIN_REPLY_TOKENS)
    room = window - reply
    used = llm.count_tokens(prompt.messages) or 0
    if used <= room:
        if prompt.mode == "pe":  # the record says how close it came
            context = {"window": window, "reply_room": window - room, "prompt_tokens": used}
            return prompt.model_copy(update={"settings": {**prompt.settings, "context": context}})
        return prompt
    if prompt.mode != "pe" or not prompt.references:
        raise LLMError(
            f"the prompt takes {used} tokens and the reply needs {reply}: more than the "
            f"model's context of {window}",
            "use a model with a longer context, or a smaller --max-tokens",
        )
    return _drop_references(prompt, llm, room, used, window, example)


def _kept(references: list[Reference], count: int) -> list[Reference]:
    """The ``count`` references most similar to the query, popular and unpopular in the
    shares they were chosen in, in their original order."""
    unpopular = [r for r in references if r.label == "unpopular"]
    share = round(count * len(unpopular) / len(references))
    keep: set[int] = set()
    popular = [r for r in references if r.label != "unpopular"]
    for group, n in ((unpopular, share), (popular, count - share)):
        ranked = sorted(group, key=lambda r: -(r.similarity if r.similarity is not None else 0.0))
        keep |= {id(r) for r in ranked[:n]}
    return [r for r in references if id(r) in keep]


def _drop_references(
    prompt: Prompt, llm: LLM, room: int, used: int, window: int, example: bool
) -> Prompt:
    refs = prompt.references

    def size(count: int) -> int:
        return llm.count_tokens(messages_for(prompt, _kept(refs, count), example)) or 0

    low, high = 0, len(refs) - 1  # the most references that fit lies in [low, high]
    if size(0) > room:
        raise LLMError(
            f"the PE prompt takes {size(0)} tokens without any reference: more than the "
            f"{room} the model's context of {window} leaves beside the reply",
            "use a model with a longer context, or a smaller --max-tokens",
        )
    while low < high:  # binary search: the count of tokens grows with the references
        mid = (low + high + 1) // 2
        if size(mid) <= room:
            low = mid
        else:
            high = mid - 1
    kept = _kept(refs, low)
    shown = {id(r) for r in kept}
    dropped = [r.video_id for r in refs if id(r) not in shown]
    after = size(low)
    note = (
        f"the prompt ({used} tokens with {len(refs)} references) did not fit the model's "
        f"context of {window} tokens with {window - room} left for the reply: dropped the "
        f"{len(dropped)} least similar reference(s), {len(kept)} shown ({after} tokens)"
    )
    context: dict[str, Any] = {
        "window": window,
        "reply_room": window - room,
        "prompt_tokens": used,
        "prompt_tokens_after": after,
        "references_asked": len(refs),
        "references_shown": len(kept),
        "dropped": dropped,
    }
    settings = {
        **prompt.settings,
        "shown": {label: sum(r.label == label for r in kept) for label in ("popular", "unpopular")},
        "context": context,
        "notes": [*prompt.settings.get("notes", []), note],
    }
    return prompt.model_copy(
        update={
            "messages": messages_for(prompt, kept, example),
            "references": kept,
            "settings": settings,
        }
    )
