"""The offline composer: an honest stand-in for an LLM.

No instruction-tuned model can be installed on a machine without a model hub, so
the default backend is a deterministic composer. It builds the three fields from
the query with fixed templates chosen by the seed and, in PE mode, borrows the
structure (not the words) of the most similar popular references. It is **not** a
language model: runs record ``is_llm: false`` and the CLI says how to plug in one.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass

from llmpopcorn.backends.base import LLM
from llmpopcorn.backends.llm.compose import (
    STOPWORDS,
    TITLE_PATTERNS,
    capitalise,
    choose_title,
    compose_caption,
    compose_hashtags,
    fit_title,
    pick,
    rotate,
    stable_int,
    subject_of,
    title_options,
    topical_phrases,
)
from llmpopcorn.core.types import ChatRequest

__all__ = ["OfflineComposer", "borrow", "fit_title", "hook_of", "subject_of"]

_STYLES = (
    "bold saturated colours, dramatic rim lighting, shallow depth of field",
    "warm golden-hour light, soft film grain, cosy atmosphere",
    "high-contrast neon palette, crisp details, dynamic diagonal composition",
    "bright pastel colours, clean studio lighting, playful mood",
    "moody cinematic teal-and-orange grade, volumetric light",
)
_MOTIONS = (
    "a fast push-in towards the subject that ends on a surprising reveal",
    "a smooth orbiting camera move around the subject with a punchy final beat",
    "a handheld close-up that whips to a wide shot at the climax",
    "a slow-motion moment that snaps back to real time on the last beat",
)


_HOOKS: dict[str, tuple[str, ...]] = {
    "question": ("Can you believe {subject}?", "Who else needs {subject}?"),
    "exclaim": ("This is {subject}!", "Not me losing it over {subject}!"),
    "number": ("3 seconds of {subject}", "Top 3 moments: {subject}"),
    "hashtag": ("{subject} #{tag}", "#{tag} moment: {subject}"),
    "pov": ("POV: you discover {subject}", "When {subject} hits different"),
    "statement": ("{subject}", "Nobody expected this: {subject}"),
}
_HOOK_WORDS = {
    "question": "a question that invites an answer",
    "exclaim": "an exclamation with high energy",
    "number": "a concrete number",
    "hashtag": "a community hashtag",
    "pov": "a first-person point of view",
    "statement": "a plain, direct statement",
}
_WORD = re.compile(r"[a-z][a-z']{2,}")
_POPULAR_SHOWN = 15
#: the title similarity below which the composer's variants count as clearly apart
CLEARLY_APART = 0.7  # the nearest popular references the composer studies


def hook_of(title: str) -> str:
    """The hook family of a title (first match wins)."""
    lower = title.lower().strip()
    if "?" in lower:
        return "question"
    if "#" in lower:
        return "hashtag"
    if lower.startswith(("pov", "when ", "me when", "if ")):
        return "pov"
    if "!" in lower:
        return "exclaim"
    if any(ch.isdigit() for ch in lower):
        return "number"
    return "statement"


def _weight(ref: dict) -> float:
    return math.log2(2 + max(0, int(ref.get("comment_count") or 0)))


@dataclass
class Borrowed:
    """What the composer takes from the references: a hook family and topical words."""

    hook: str
    keywords: list[str]
    category: str
    studied: int


def borrow(references: list[dict], query: str) -> Borrowed | None:
    """Contrast the nearest popular references with the unpopular ones: the hook
    family and the words that are most typical of the popular side, weighted by
    log comment count. Only the query's own subject is ever used as content."""
    popular = [r for r in references if r.get("label") == "popular"][:_POPULAR_SHOWN]
    unpopular = [r for r in references if r.get("label") == "unpopular"]
    if not popular:
        return None
    hooks: Counter[str] = Counter()
    words: Counter[str] = Counter()
    for group, sign in ((popular, 1.0), (unpopular, -1.0)):
        total = sum(_weight(r) for r in group) or 1.0
        for ref in group:
            share = sign * _weight(ref) / total
            hooks[hook_of(ref.get("title", ""))] += share
            for word in set(_WORD.findall(ref.get("title", "").lower())):
                if word not in STOPWORDS:
                    words[word] += share
    query_words = set(_WORD.findall(query.lower()))
    ranked_hooks = sorted(hooks.items(), key=lambda kv: (-kv[1], kv[0]))
    keywords = [
        w
        for w, score in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
        if score > 0 and w not in query_words
    ][:3]
    return Borrowed(
        hook=ranked_hooks[0][0],
        keywords=keywords,
        category=str(popular[0].get("category") or ""),
        studied=len(popular) + len(unpopular),
    )


def ordered_titles(subject: str, query: str, seed: int, borrowed: Borrowed | None) -> list[str]:
    """Every title the composer could give, in order of preference, starting at the seed's
    place (seeds s and s + 1 lead with different titles): in PE one title in the borrowed
    hook's pattern first; then whole-subject titles before shortened ones when there are a
    few to vary over (else both take turns); titles on one topic of the subject last."""
    # the category as the community hashtag (#animal, #anime), as MicroLens titles do
    tag = re.sub(r"\W+", "", borrowed.category.lower()) if borrowed else ""
    hook = list(_HOOKS[borrowed.hook]) if borrowed is not None else []
    hooked = title_options(subject, hook, tag or "fyp")
    rest = title_options(subject, [p for p in TITLE_PATTERNS if p not in hook], tag or "fyp")
    start = stable_int(query, "title") + seed
    first = rotate(hooked["whole"] + hooked["short"], start)[:1]
    whole = [t for t in hooked["whole"] + rest["whole"] if t not in first]
    short = [t for t in hooked["short"] + rest["short"] if t not in first]
    groups = (whole, short) if len(whole) >= 3 else (whole + short,)
    ordered = first + [t for group in groups for t in rotate(group, start)]
    ordered += rotate(hooked["topic"] + rest["topic"], start)
    # no pattern has room for a whole phrase of the subject (one overlong word): cut it
    return ordered or [fit_title(capitalise(subject))]


class OfflineComposer(LLM):
    name = "offline"
    description = "deterministic offline stand-in (NOT an LLM): template ideas from the query"
    is_llm = False

    def complete(self, request: ChatRequest) -> str:
        from llmpopcorn.core.copycheck import COPY_THRESHOLD, find_copy, similar_title
        from llmpopcorn.core.types import Reference

        context = request.context
        query = str(context.get("query", "")).strip()
        if not query:
            # used outside the pipeline: the last user message is the best we have
            users = [m.content for m in request.messages if m.role == "user"]
            query = users[-1] if users else "a surprising moment"
        attempt = int(context.get("attempt") or 1)
        seed = int(request.seed or 0)
        # a re-ask (after a copy or duplicate check) must not give the same answer again
        key = f"{query}|{seed}" + (f"|{attempt}" if attempt > 1 else "")
        subject = subject_of(query)
        references = context.get("references") or []
        borrowed = borrow(references, query) if references else None
        refs = [Reference(**r) for r in references]
        avoid = [str(t) for t in context.get("avoid_titles") or []]

        def original(threshold: float):  # copies no reference, repeats no other variant
            return lambda title: (
                find_copy(title, refs) is None and similar_title(title, avoid, threshold) is None
            )

        ordered = ordered_titles(subject, query, seed, borrowed)
        # clearly apart from the other variants' titles where possible, else just not a
        # near-duplicate by the pipeline's own measure
        title = (
            choose_title(ordered, original(CLEARLY_APART), skip=attempt - 1)
            or choose_title(ordered, original(COPY_THRESHOLD), skip=attempt - 1)
            or ordered[0]
        )
        style = pick(_STYLES, key, "style")
        motion = pick(_MOTIONS, key, "motion")
        cover = (
            f"Vertical 9:16 cover image about {subject}: a single clear focal subject filling "
            f"the frame, expressive and eye-catching, {style}, clear space for the title "
            f'"{title}", ultra detailed, trending micro-video thumbnail.'
        )
        video = (
            f"A 3-second vertical 9:16 video about {subject}: {motion}, {style}, "
            "smooth natural motion, single continuous shot, high detail, no text overlays."
        )
        if borrowed is not None:
            where = f"popular {borrowed.category} videos" if borrowed.category else "popular videos"
            hook = _HOOK_WORDS[borrowed.hook]
            if borrowed.keywords:
                shared = ", ".join(borrowed.keywords)
                cover += f" Nod to what the most-commented similar {where} share: {shared}."
            cover += f" The title opens with {hook}, like the most-commented references."
            video += (
                f" Pace it like the most-commented similar {where}: "
                f"the hook ({hook}) lands in the first second."
            )
        category = context.get("category") or (borrowed.category if borrowed else None)
        idea = {
            "title": title,
            "cover_prompt": cover,
            "video_prompt": video,
            "caption": compose_caption(
                subject, key, question=borrowed is not None and borrowed.hook == "question"
            ),
            # the subject's words and what popular videos of the category use (never the
            # title's own pattern words)
            "hashtags": compose_hashtags(subject, category, context.get("category_hashtags") or []),
            # what the clip shows, for the stock renderers' search: the subject's topics
            "keywords": topical_phrases(subject)[:3],
        }
        if references:
            idea["_references_seen"] = len(references)
        return json.dumps(idea, ensure_ascii=False)

    def model_id(self) -> str:
        # v4: titles never cut mid-phrase, consecutive seeds lead with different patterns,
        # a post caption and hashtags
        return "offline-composer-v4"
