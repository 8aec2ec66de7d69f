"""Variants that differ: N ideas for one query, each told to take its own angle, and a
title that nearly repeats another variant's re-asked.

Used by ``popcorn make --variants N`` and by batch items, both through
:meth:`llmpopcorn.pipeline.core.Pipeline.ask_variant`.
"""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher

from llmpopcorn.core.copycheck import COPY_THRESHOLD, normalise_title

#: one instruction per variant (cycled), so N variants of a query take N angles
ANGLES = (
    "Lead with a surprising twist or reveal.",
    "Frame it as a quick how-to or tip the viewer can use.",
    "Tell it as a first-person POV moment.",
    "Make it a challenge, a test or a before/after comparison.",
    "Play it for laughs with an unexpected contrast.",
    "Make it calm and aesthetic: a satisfying, beautiful moment.",
    "Build it around a question the viewer wants answered.",
    "Use a countdown or a list format.",
)


def diversify(prompt, variant: int, variants: int):
    """The prompt with an instruction to take variant ``variant``'s own angle (N > 1)."""
    if variants <= 1:
        return prompt
    angle = ANGLES[variant % len(ANGLES)]
    note = (
        f"\n\nThis is variant {variant + 1} of {variants} for this query. {angle} "
        "Give it its own title: not a rewording of the obvious one."
    )
    messages = list(prompt.messages)
    last = messages[-1]
    messages[-1] = last.model_copy(update={"content": last.content + note})
    return prompt.model_copy(update={"messages": messages})


def similar_title(title: str, others: Sequence[str], threshold: float = COPY_THRESHOLD):
    """The first of ``others`` that ``title`` nearly equals (the copy check's measure)."""
    new = normalise_title(title)
    if not new:
        return None
    for other in others:
        old = normalise_title(other)
        if not old:
            continue
        if new == old:
            return other
        matcher = SequenceMatcher(None, new, old, autojunk=False)
        if matcher.real_quick_ratio() >= threshold and matcher.ratio() >= threshold:
            return other
    return None


def variant_check(guard, avoid: Sequence[str]):
    """A check for :func:`llmpopcorn.pipeline.ideate.ideate`: PE's copy guard first, then a title
    too close to one of ``avoid`` (the titles earlier variants got) is re-asked."""

    def check(idea) -> str | None:
        problem = guard(idea) if guard else None
        if problem:
            return problem
        twin = similar_title(idea.title, avoid)
        if twin:
            return (
                f'the title is almost the same as another variant\'s ("{twin}"): '
                "write a clearly different title and angle"
            )
        return None

    return check
