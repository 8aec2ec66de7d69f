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
import re

from ...types import TITLE_MAX_CHARS, ChatRequest
from ..base import LLM

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


class OfflineComposer(LLM):
    name = "offline"
    description = "deterministic offline stand-in (NOT an LLM): template ideas from the query"
    is_llm = False

    def complete(self, request: ChatRequest) -> str:
        query = str(request.context.get("query", "")).strip()
        if not query:
            # used outside the pipeline: the last user message is the best we have
            users = [m.content for m in request.messages if m.role == "user"]
            query = users[-1] if users else "a surprising moment"
        key = f"{query}|{request.seed}"
        subject = subject_of(query)
        references = request.context.get("references") or []
        pattern = _pick(_TITLE_PATTERNS, key, "title")
        title = fit_title(_capitalise(pattern.format(subject=subject)))
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
        idea = {"title": title, "cover_prompt": cover, "video_prompt": video}
        if references:
            idea["_references_seen"] = len(references)
        return json.dumps(idea, ensure_ascii=False)

    def model_id(self) -> str:
        return "offline-composer-v1"
