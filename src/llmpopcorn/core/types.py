"""Typed data passed between pipeline stages and saved in run records."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llmpopcorn.core.paths import strip_unsafe

TITLE_MAX_CHARS = 50
CAPTION_MAX_CHARS = 300
MAX_HASHTAGS = 6
HASHTAG_MAX_CHARS = 40
MAX_KEYWORDS = 5
KEYWORD_MAX_CHARS = 40

Mode = Literal["basic", "pe"]


class Message(BaseModel):
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str


class Idea(BaseModel):
    """The LLM's answer: what the micro-video should be."""

    model_config = ConfigDict(extra="ignore")

    title: str = Field(min_length=1, max_length=TITLE_MAX_CHARS)
    cover_prompt: str = Field(min_length=1)
    video_prompt: str = Field(min_length=1)
    #: beyond the paper's three fields: the post's text for viewers (one or two sentences,
    #: never the video prompt) and its hashtags; optional, so old records and replies
    #: without them stay valid (the package then composes them, see pipeline.package)
    caption: str | None = Field(None, min_length=1, max_length=CAPTION_MAX_CHARS)
    hashtags: list[Annotated[str, Field(max_length=HASHTAG_MAX_CHARS + 1)]] = Field(
        default_factory=list, max_length=MAX_HASHTAGS
    )
    #: what the video shows, as stock-footage search terms (one to three words each), for
    #: the stock renderers (pexels, pixabay); optional like the post fields
    keywords: list[Annotated[str, Field(max_length=KEYWORD_MAX_CHARS)]] = Field(
        default_factory=list, max_length=MAX_KEYWORDS
    )

    @field_validator("title", "cover_prompt", "video_prompt", "caption", mode="before")
    @classmethod
    def _strip(cls, value: Any, info: ValidationInfo) -> Any:
        # every idea (an LLM reply, an MCP or web caller, an old record.json) loses its
        # bidi overrides and invisible controls here, so no output can carry them
        if isinstance(value, str):
            value = " ".join(strip_unsafe(value).split())
            return value or None if info.field_name == "caption" else value
        return value

    @field_validator("hashtags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        """Normalised tags: ``"#corgi #surf"`` or ``["corgi", "Surf Life"]`` become
        ``["#corgi", "#surf"]`` / ``["#corgi", "#SurfLife"]``; unusable entries are dropped,
        repeats removed, at most :data:`MAX_HASHTAGS` kept."""
        if value is None:
            return []
        if isinstance(value, str):  # "#a #b c", "a, b c" or "a b"
            value = re.split(r"[#,]", value) if re.search(r"[#,]", value) else value.split()
        if not isinstance(value, list):
            return value  # pydantic says what is wrong
        tags, seen = [], set()
        for item in value:
            tag = as_hashtag(item) if isinstance(item, str) else None
            if tag and tag.lower() not in seen:
                seen.add(tag.lower())
                tags.append(tag)
        return tags[:MAX_HASHTAGS]

    @field_validator("keywords", mode="before")
    @classmethod
    def _keywords(cls, value: Any) -> Any:
        """Search terms: a list or a comma-separated string; blanks, repeats and ones too
        long dropped, at most :data:`MAX_KEYWORDS` kept."""
        if value is None:
            return []
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list):
            return value  # pydantic says what is wrong
        terms, seen = [], set()
        for item in value:
            term = (
                " ".join(strip_unsafe(item).replace("#", " ").split())
                if isinstance(item, str)
                else ""
            )
            if term and len(term) <= KEYWORD_MAX_CHARS and term.lower() not in seen:
                seen.add(term.lower())
                terms.append(term)
        return terms[:MAX_KEYWORDS]

    @model_validator(mode="after")
    def _caption_is_for_viewers(self) -> Idea:
        caption = _squash(self.caption or "")
        for prompt in (_squash(self.video_prompt), _squash(self.cover_prompt)):
            # equal, or one holds the other (30 characters or more: a long shared stretch)
            shorter, longer = sorted((caption, prompt), key=len)
            if caption and (caption == prompt or (len(shorter) >= 30 and shorter in longer)):
                raise ValueError(
                    "the caption repeats a generation prompt: "
                    "write one or two sentences for viewers"
                )
        return self


def as_hashtag(text: str) -> str | None:
    """One hashtag: a single word as written (``"corgi"`` -> ``"#corgi"``), several in
    CamelCase (``"surf life"`` -> ``"#SurfLife"``); letters of any script, digits and ``_``
    only; None when nothing usable is left or it is too long."""
    words = re.findall(r"\w+", strip_unsafe(text).replace("#", " "))
    tag = words[0] if len(words) == 1 else "".join(w[:1].upper() + w[1:] for w in words)
    if not tag or len(tag) > HASHTAG_MAX_CHARS or not any(c.isalpha() for c in tag):
        return None
    return "#" + tag


def _squash(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class Reference(BaseModel):
    """A corpus video shown to the LLM (PE) or used to explain a score."""

    video_id: str
    title: str = ""
    cover_desc: str = ""
    caption: str = ""
    category: str = ""
    comment_count: int | None = None
    label: Literal["popular", "unpopular", "neighbour"] = "neighbour"
    similarity: float | None = None


class ChatRequest(BaseModel):
    """What an LLM backend is asked.

    ``context`` carries structured facts about the request (the query, the mode,
    the references) for backends that are not language models, such as the
    offline composer. Real LLMs only see ``messages``.
    """

    messages: list[Message]
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int | None = 42
    max_tokens: int = 1024
    context: dict[str, Any] = Field(default_factory=dict)
    #: the JSON schema the answer must follow: a backend that can constrain its output
    #: (local constrained decoding, a server's ``response_format``) holds the reply to it;
    #: the others ignore it and the reply is parsed and validated
    response_schema: dict[str, Any] | None = None
    #: free reasoning may come before the JSON answer (PE's chain of thought): a
    #: constraining backend lets the reply think first, then holds the answer to the schema
    reasoning: bool = False


#: how a reply's form was obtained (``Completion.method``, ``Attempt.method``)
ReplyMethod = Literal["schema", "response_format", "parse"]
#: the finish reason of a local reply the constrained decoder stopped: its grammar engine
#: refused a token sampled under its own mask (seen once in 400 PE replies of SmolLM2 on
#: onnxruntime-genai: "Error committing tokens: Parser Error: token ... doesn't satisfy the
#: grammar; forced bytes: got '\n'", the reasoning budget ending inside an emoji's bytes);
#: the reply is unusable and is asked again with another seed, like any invalid reply
GRAMMAR_FAULT = "grammar"


class Completion(BaseModel):
    """What an LLM backend returns for one request. A backend or fake may return a plain
    ``str`` instead: it is read as ``Completion(text=...)`` (finish unknown, parsed)."""

    text: str
    #: why generation ended: ``stop`` (the answer ended), ``length`` (cut at the token
    #: budget), ``timeout`` (the call's deadline), ``refused`` (a refusal or content
    #: filter), ``grammar`` (:data:`GRAMMAR_FAULT`); None when the backend does not say
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    #: ``schema``: constrained decoding here; ``response_format``: the server's JSON-schema
    #: mode; ``parse``: free text, parsed and validated afterwards
    method: ReplyMethod = "parse"

    @classmethod
    def of(cls, reply: Completion | str) -> Completion:
        return reply if isinstance(reply, Completion) else cls(text=reply)


class Attempt(BaseModel):
    """One round trip to the LLM during ideation."""

    reply: str
    error: str | None = None
    seconds: float = 0.0
    #: why the reply was rejected (None: it was valid): ``parse`` (no/invalid JSON or
    #: schema), ``copy`` (copies a reference), ``duplicate`` (repeats another variant),
    #: ``truncated`` (cut at the token budget), ``timeout``, ``refused``, ``error``
    reason: str | None = None
    finish_reason: str | None = None
    #: the sampling seed of this attempt (a re-ask samples with a new one)
    seed: int | None = None
    method: ReplyMethod | None = None
    max_tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Prompt(BaseModel):
    """Messages ready to send, plus the references they were built from."""

    mode: Mode
    query: str
    messages: list[Message]
    references: list[Reference] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    #: facts for backends that are not language models (the run's category and the
    #: hashtags its popular videos use, titles other variants took), merged into
    #: ``ChatRequest.context``; never part of the messages
    context: dict[str, Any] = Field(default_factory=dict)
    #: whether the messages ask for the post's caption, hashtags and keywords besides the
    #: paper's three fields (title, cover prompt, video prompt); the answer's schema follows
    post_text: bool = True


class Artifact(BaseModel):
    """A file the run produced."""

    kind: Literal["cover", "clip", "report", "record", "other"]
    path: str  # relative to the run directory
    media_type: str
    bytes: int
    backend: str
    meta: dict[str, Any] = Field(default_factory=dict)


class Score(BaseModel):
    """Predicted popularity of an idea (log2 of the comment count)."""

    predictor: str
    log2_comments: float
    expected_comments: float
    interval: tuple[float, float] | None = None  # in log2 comments
    interval_level: float | None = None
    percentile: float | None = None
    category: str | None = None
    neighbours: list[Reference] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)


class BackendUse(BaseModel):
    """Which backend ran a stage, with its options (never secrets)."""

    name: str
    kind: str
    model: str | None = None
    is_llm: bool | None = None
    options: dict[str, Any] = Field(default_factory=dict)


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Variant(BaseModel):
    """One of several ideas asked for the same query, with its predicted popularity."""

    seed: int
    idea: Idea | None = None
    log2_comments: float | None = None
    expected_comments: float | None = None
    error: str | None = None
    #: the earlier variant's title this one still nearly repeats after its re-asks (None:
    #: distinct by the copy check's measure, core.copycheck.similar_title)
    duplicate_of: str | None = None


class RefineRound(BaseModel):
    """One round of judge-guided refinement (round 0: the run's first idea), with both
    loop judges' scores (``predictor``, ``log2_comments``, ``interval``, ``category``;
    the reward judge's also its ``neighbours`` and ``percentile``, what the LLM saw)."""

    round: int
    idea: Idea | None = None
    reward: dict[str, Any] | None = None
    #: the evaluation judge's score: never shown to the LLM, never used to choose
    evaluation: dict[str, Any] | None = None
    seeds: list[int] = Field(default_factory=list)
    #: answers compared by the reward judge in this round (the stand-in composes several)
    candidates: int = 1
    attempts: list[Attempt] = Field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


class Refinement(BaseModel):
    """Every round of a run's refinement (``pipeline.refine``) and which was kept."""

    rounds_asked: int
    rounds: list[RefineRound]
    kept: int  # the round whose idea the run kept: the best by the reward judge
    method: str
    #: which judge rewarded and which evaluated, and their overlap with PE's references
    judges: dict[str, Any] = Field(default_factory=dict)
    shown: dict[str, Any] = Field(default_factory=dict)


class RunRecord(BaseModel):
    """Everything about one run; saved as ``record.json`` in the run directory."""

    run_id: str
    #: ``interrupted``: stopped from outside (Ctrl-C, SIGTERM, a cancel or a server
    #: shutdown) before it finished, not a failure of the run itself
    status: Literal["running", "ok", "failed", "interrupted"] = "running"
    error: str | None = None
    #: why a failed run failed: the last attempt's reason for an LLM failure (parse,
    #: copy, duplicate, truncated, timeout, refused, error), or render, score, setup,
    #: interrupted for the other stages
    failure: str | None = None
    query: str
    mode: Mode
    seed: int
    created: str = Field(default_factory=utcnow)
    finished: str | None = None
    package_version: str
    run_dir: str
    backends: dict[str, BackendUse] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    messages: list[Message] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)
    references: list[Reference] = Field(default_factory=list)
    enhancement: dict[str, Any] | None = None  # PE: categories, pools, counts, notes
    #: the run's category (name, which resolver chose it), used by the scorer and report
    category: dict[str, Any] | None = None
    idea: Idea | None = None
    variants: list[Variant] = Field(default_factory=list)  # ranked best first
    refinement: Refinement | None = None  # judge-guided rounds (--refine K)
    copy_check: dict[str, Any] | None = None
    artifacts: list[Artifact] = Field(default_factory=list)
    score: Score | None = None
    visual_stats: dict[str, float] | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    def artifact(self, kind: str) -> Artifact | None:
        for art in self.artifacts:
            if art.kind == kind:
                return art
        return None
