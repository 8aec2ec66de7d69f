"""The offline composer: an honest stand-in for an LLM.

No instruction-tuned model can be installed on a machine without a model hub, so
the default backend is a deterministic composer. It builds the three fields from
the query with fixed templates chosen by the seed and, in PE mode, borrows the
structure (not the words) of the most similar popular references. It is **not** a
language model: runs record ``is_llm: false`` and the CLI says how to plug in one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass

from llmpopcorn.backends.base import LLM
from llmpopcorn.core.types import TITLE_MAX_CHARS, ChatRequest

# Leading instructions that say what to do rather than what the video is about.
_LEAD = re.compile(
    r"^(please\s+)?(create|make|generate|produce|design|film|shoot|animate|summari[sz]e|show|"
    r"write|build|compose|craft|edit|record|present|explain|explore|analy[sz]e|showcase|"
    r"compile|highlight|capture|depict|illustrate|tell|imagine|visuali[sz]e|give)\b"
    r"(\s+(me|us))?(\s+(a|an|the|some))?"
    r"(\s+(short|quick|fun|funny|3-second|viral|cinematic|dramatic|emotional))*"
    r"(\s+(video|clip|montage|compilation|short|reel|animation|story|skit|vlog|tutorial))?"
    r"(\s+(about|of|on|showing|showcasing|exploring|analy[sz]ing|featuring|where|that|in which|"
    r"highlighting|depicting|comparing|explaining|summari[sz]ing|reviewing|ranking))?\s*",
    re.IGNORECASE,
)

_TITLE_PATTERNS = (
    "{subject}",
    "Wait for it: {subject}",
    "POV: {subject}",
    "{subject} in 3 seconds",
    "Nobody expected this: {subject}",
    "{subject}, but make it epic",
)
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


def subject_of(query: str) -> str:
    """The topic of a query with instructions like "Create a video about" removed."""
    text = " ".join(query.split()).strip(" .!?")
    stripped = _LEAD.sub("", text, count=1).strip(" .!?:,")
    return stripped or text


def _pick(options: tuple[str, ...], key: str, salt: str) -> str:
    digest = hashlib.sha256(f"{salt}|{key}".encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def fit_title(text: str, limit: int = TITLE_MAX_CHARS) -> str:
    """Shorten at a word boundary to at most ``limit`` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,:;-")
    return (cut or text[: limit - 1]) + "…"


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def fill_title(pattern: str, subject: str, tag: str, limit: int = TITLE_MAX_CHARS) -> str:
    """``pattern`` with the subject shortened to fit, so a long query keeps the pattern's
    own words ("... in 3 seconds") and different patterns stay different titles."""
    text = _capitalise(pattern.format(subject=subject, tag=tag))
    if len(text) <= limit:
        return text
    room = limit - len(pattern.format(subject="", tag=tag))
    if room < 12:  # too little room for a readable subject: cut the whole title
        return fit_title(text, limit)
    return fit_title(_capitalise(pattern.format(subject=fit_title(subject, room), tag=tag)), limit)


_HOOKS: dict[str, tuple[str, ...]] = {
    "question": ("Can you believe {subject}?", "Who else needs {subject}?"),
    "exclaim": ("{subject}!", "This is {subject}!"),
    "number": ("3 seconds of {subject}", "Top 3 moments: {subject}"),
    "hashtag": ("{subject} #{tag}", "#{tag} {subject}"),
    "pov": ("POV: {subject}", "When {subject} hits different"),
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
_STOPWORDS = frozenset(
    """the and for with this that you your are was were have has had not but all can will
    just what when who how why its his her they them their our out get got one too very from
    into onto over about after before more most some such than then there these those also here
    where which while would could should been being did does doing don let video videos really
    like make made new day time people see look want know good come go back still only even
    much many way well""".split()
)
_WORD = re.compile(r"[a-z][a-z']{2,}")
_POPULAR_SHOWN = 15  # the nearest popular references the composer studies


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
                if word not in _STOPWORDS:
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


def _title_candidates(subject: str, key: str, borrowed: Borrowed | None) -> list[str]:
    """Titles in order of preference: the borrowed hook's patterns first."""
    first = _pick(_TITLE_PATTERNS, key, "title")
    patterns = [first, *(p for p in _TITLE_PATTERNS if p != first)]
    if borrowed is not None:
        hook_patterns = list(_HOOKS[borrowed.hook])
        if _pick(("a", "b"), key, "hook") == "b":
            hook_patterns.reverse()
        patterns = hook_patterns + patterns
    # the category as the community hashtag (#animal, #anime), as MicroLens titles do
    tag = re.sub(r"\W+", "", borrowed.category.lower()) if borrowed else ""
    return [fill_title(p, subject, tag or "fyp") for p in patterns]


class OfflineComposer(LLM):
    name = "offline"
    description = "deterministic offline stand-in (NOT an LLM): template ideas from the query"
    is_llm = False

    def complete(self, request: ChatRequest) -> str:
        from llmpopcorn.core.copycheck import find_copy
        from llmpopcorn.core.types import Reference

        query = str(request.context.get("query", "")).strip()
        if not query:
            # used outside the pipeline: the last user message is the best we have
            users = [m.content for m in request.messages if m.role == "user"]
            query = users[-1] if users else "a surprising moment"
        attempt = int(request.context.get("attempt") or 1)
        # a re-ask (after a copy check) must not give the same answer again
        key = f"{query}|{request.seed}" + (f"|{attempt}" if attempt > 1 else "")
        subject = subject_of(query)
        references = request.context.get("references") or []
        borrowed = borrow(references, query) if references else None
        refs = [Reference(**r) for r in references]
        candidates = _title_candidates(subject, key, borrowed)
        # never copy a reference's title: take the first candidate that is original
        title = next((t for t in candidates if find_copy(t, refs) is None), candidates[0])
        style = _pick(_STYLES, key, "style")
        motion = _pick(_MOTIONS, key, "motion")
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
        idea = {"title": title, "cover_prompt": cover, "video_prompt": video}
        if references:
            idea["_references_seen"] = len(references)
        return json.dumps(idea, ensure_ascii=False)

    def model_id(self) -> str:
        return "offline-composer-v3"  # v3: long subjects shortened inside the title pattern
