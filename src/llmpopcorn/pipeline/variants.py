"""Variants that differ: N ideas for one query, each told to take its own angle, and a
title that nearly repeats another variant's re-asked.

Used by ``popcorn make --variants N`` and by batch items, both through
:meth:`llmpopcorn.pipeline.core.Pipeline.ask_variant`.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmpopcorn.core.copycheck import similar_title

__all__ = ["ANGLES", "diversify", "duplicates_note", "similar_title", "variant_check"]

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


def diversify(prompt, variant: int, variants: int, avoid: Sequence[str] = ()):
    """The prompt with an instruction to take variant ``variant``'s own angle (N > 1) and
    the titles earlier variants took (``avoid``): in the message for an LLM, in
    ``prompt.context["avoid_titles"]`` for the offline stand-in."""
    if variants <= 1:
        return prompt
    angle = ANGLES[variant % len(ANGLES)]
    taken = "; ".join(f'"{t}"' for t in avoid)
    note = (
        f"\n\nThis is variant {variant + 1} of {variants} for this query. {angle} "
        "Give it its own title: not a rewording of the obvious one"
        + (f", and not close to the titles already taken: {taken}." if avoid else ".")
    )
    messages = list(prompt.messages)
    last = messages[-1]
    messages[-1] = last.model_copy(update={"content": last.content + note})
    context = {**prompt.context, "variant": variant, "avoid_titles": list(avoid)}
    return prompt.model_copy(update={"messages": messages, "context": context})


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


def duplicates_note(variants: Sequence) -> str | None:
    """What the record says when some variants could not be made distinct (each
    :class:`~llmpopcorn.core.types.Variant` also carries its ``duplicate_of``)."""
    twins = [v for v in variants if v.duplicate_of]
    if not twins:
        return None
    pairs = "; ".join(f'seed {v.seed} repeats "{v.duplicate_of}"' for v in twins)
    return (
        f"{len(twins)} of {len(variants)} variants could not be made distinct after their "
        f"re-asks ({pairs})."
    )
