"""Turn an LLM reply into a validated :class:`Idea`.

Real replies wrap the JSON in code fences, put reasoning before it, emit
``<think>...</think>`` blocks (DeepSeek-R1 and other reasoning models), leave
trailing commas, or spell keys differently (``Title``, ``cover prompt``). This
module finds the JSON object, repairs the harmless mistakes, normalises the keys
and validates the result against the schema. Anything it cannot use raises
:class:`ReplyParseError` with a message fit to feed back to the model.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from llmpopcorn.core.paths import strip_unsafe
from llmpopcorn.core.types import TITLE_MAX_CHARS, Idea
from llmpopcorn.enhance.prompts import example_idea

FIELDS = ("title", "cover_prompt", "video_prompt")

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_KEY_ALIASES = {
    "title": "title",
    "video_title": "title",
    "cover_prompt": "cover_prompt",
    "cover_image_prompt": "cover_prompt",
    "cover": "cover_prompt",
    "image_prompt": "cover_prompt",
    "video_prompt": "video_prompt",
    "video_clip_prompt": "video_prompt",
    "video": "video_prompt",
    "clip_prompt": "video_prompt",
    # optional, beyond the paper's three fields (see Idea)
    "caption": "caption",
    "post_caption": "caption",
    "hashtags": "hashtags",
    "hash_tags": "hashtags",
    "tags": "hashtags",
    "keywords": "keywords",
    "search_terms": "keywords",
    "stock_keywords": "keywords",
}
OPTIONAL_FIELDS = ("caption", "hashtags", "keywords")


#: bounds for constrained generation only (an Idea itself accepts longer prompts): each
#: string has some substance and a paragraph at most, so a constrained reply always ends
MIN_TEXT_CHARS = 3
PROMPT_MAX_CHARS = 600
#: one line: no leading or trailing blank, no control character (an empty or blank title
#: was seen from a small model under a schema with no such bound)
ONE_LINE = r"^[^\s\x00-\x1f\x7f]([^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"


def idea_json_schema(*, reasoning: bool = False, post_text: bool = True) -> dict[str, Any]:
    """The JSON schema of an answer, derived from :class:`Idea` (its fields, types and
    bounds): every field required (the prompt asks for each), every string one line of
    at least :data:`MIN_TEXT_CHARS` characters and, where the Idea sets no limit, at most
    :data:`PROMPT_MAX_CHARS`; nothing else allowed. ``reasoning``: a first ``reasoning``
    field, so a server that holds its whole reply to the schema still thinks before it
    answers (PE's chain of thought); :func:`parse_idea` ignores it. ``post_text`` off:
    only the paper's fields, without the post's (:data:`OPTIONAL_FIELDS`)."""
    source = Idea.model_json_schema()
    properties: dict[str, Any] = {}
    if reasoning:
        properties["reasoning"] = {"type": "string", "minLength": 1}
    for name, spec in source["properties"].items():
        if post_text or name not in OPTIONAL_FIELDS:
            properties[name] = _bounded(_not_null(spec))
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _not_null(spec: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` as ``X``: an answer gives every field."""
    options = [s for s in spec.get("anyOf", []) if s.get("type") != "null"]
    return dict(options[0]) if len(options) == 1 else dict(spec)


def _bounded(spec: dict[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in spec.items() if k not in ("title", "default", "description")}
    if spec.get("type") == "string":
        spec["minLength"] = max(spec.get("minLength", 0), MIN_TEXT_CHARS)
        spec.setdefault("maxLength", PROMPT_MAX_CHARS)
        spec["pattern"] = ONE_LINE
    elif spec.get("type") == "array" and isinstance(spec.get("items"), dict):
        spec["items"] = _bounded(spec["items"])
    return spec


class ReplyParseError(ValueError):
    """The reply holds no usable idea; the message says why (and is sent back)."""


def strip_reasoning(text: str) -> str:
    """Remove ``<think>`` blocks, including an unterminated one at the start."""
    text = _THINK.sub("", text)
    lower = text.lower()
    if "</think>" in lower:  # opening tag was cut off by the server
        text = text[lower.rindex("</think>") + len("</think>") :]
    elif lower.lstrip().startswith("<think>"):
        # reasoning never closed: nothing after it can be trusted as the answer
        text = ""
    return text


def _balanced_objects(text: str) -> list[str]:
    """Every top-level ``{...}`` span, respecting strings and escapes."""
    spans, depth, start, in_str, escaped = [], 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = depth > 0
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans


def _loads(candidate: str) -> Any:
    for attempt in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
        try:
            return json.loads(attempt)
        except json.JSONDecodeError:
            continue
    return None


def _normalise_key(key: str) -> str:
    return re.sub(r"[\s\-]+", "_", key.strip().lower())


def _normalise(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        canonical = _KEY_ALIASES.get(_normalise_key(str(key)))
        if canonical and canonical not in out:
            out[canonical] = value
    if not out:
        # one level of wrapping: {"answer": {...}} or {"video": {...}}
        nested = [v for v in obj.values() if isinstance(v, dict)]
        if len(nested) == 1:
            return _normalise(nested[0])
    return out


def find_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a reply that best matches the answer's keys."""
    text = strip_reasoning(text)
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    candidates += _balanced_objects(text)
    best: dict[str, Any] | None = None
    best_hits = -1
    # later objects win ties: models often restate a draft before the final answer
    for candidate in candidates:
        obj = _loads(candidate.strip())
        if not isinstance(obj, dict):
            continue
        hits = len(_normalise(obj))
        if hits >= best_hits:
            best, best_hits = obj, hits
    if best is None:
        raise ReplyParseError("the reply contains no JSON object")
    return best


def _is_example(fields: dict[str, Any]) -> bool:
    example = example_idea()
    same = 0
    for key in FIELDS:
        value = fields.get(key)
        if isinstance(value, str) and _norm_text(value) == _norm_text(example[key]):
            same += 1
    return same >= 1


def _norm_text(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def parse_idea(reply: str) -> Idea:
    """Parse and validate a reply; raise :class:`ReplyParseError` with a clear reason."""
    if not reply or not reply.strip():
        raise ReplyParseError("the reply was empty")
    fields = _normalise(find_json_object(reply))
    missing = [k for k in FIELDS if k not in fields]
    if missing:
        raise ReplyParseError(f"the JSON object is missing the key(s): {', '.join(missing)}")
    for key in FIELDS:
        if not isinstance(fields[key], str):
            raise ReplyParseError(f'"{key}" must be a string, got {type(fields[key]).__name__}')
        # before any check, so the title's length and the example check see what is kept
        fields[key] = strip_unsafe(fields[key])
    if _is_example(fields):
        raise ReplyParseError("the answer repeats the example from the instructions")
    title = " ".join(fields["title"].split()).strip("\"'“”")
    if len(title) > TITLE_MAX_CHARS:
        raise ReplyParseError(
            f"the title has {len(title)} characters; it must have at most {TITLE_MAX_CHARS}"
        )
    extra = {k: fields[k] for k in OPTIONAL_FIELDS if fields.get(k) is not None}
    try:
        return Idea(
            title=title,
            cover_prompt=fields["cover_prompt"],
            video_prompt=fields["video_prompt"],
            **extra,
        )
    except ValidationError as exc:
        reasons = "; ".join(
            f'"{e["loc"][0]}": {e["msg"]}' if e["loc"] else e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ReplyParseError(reasons) from None
