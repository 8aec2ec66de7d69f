"""Prompt templates (package data) and the basic-mode prompt builder."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from string import Template

from llmpopcorn.core.types import Message, Prompt


@cache
def template(name: str) -> str:
    """The text of ``prompts/<name>`` shipped with the package."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def render(name: str, **values: str) -> str:
    """Fill a ``$placeholder`` template; unknown placeholders are an error."""
    return Template(template(name)).substitute(**values).strip()


#: the fields of the paper's prompt; the post's fields (caption, hashtags, stock-footage
#: keywords) are asked for besides them unless ``post_text`` is off
PAPER_FIELDS = ("title", "cover_prompt", "video_prompt")


@cache
def example_idea() -> dict[str, str]:
    """The example answer shown in the prompt (a reply equal to it is rejected)."""
    return json.loads(template("example.json"))


def example_json(post_text: bool = True) -> str:
    idea = example_idea()
    if not post_text:
        idea = {k: v for k, v in idea.items() if k in PAPER_FIELDS}
    return json.dumps(idea, indent=2, ensure_ascii=False)


def example_block(example: bool = True, post_text: bool = True) -> str:
    """The format example and the sentence that introduces it, or nothing: a backend that
    holds its reply to the answer's schema needs no example of the format, and a small
    model copies it (SmolLM2-135M answered "My cat saw snow for the first time" to "a
    corgi learns to surf" in 5 of 5 seeds)."""
    if not example:
        return ""
    return render("example_block.txt", example=example_json(post_text))


def field_values(*, example: bool, post_text: bool) -> dict[str, str]:
    """The placeholders every answer template shares: the post's field lines (or none:
    the paper's three fields only), how many keys, and the example."""
    return {
        "post_fields": template("post_fields.txt") if post_text else "",
        "count": "six" if post_text else "three",
        "example": example_block(example, post_text),
    }


def basic_messages(query: str, *, example: bool = True, post_text: bool = True) -> list[Message]:
    user = render(
        "basic_user.txt", query=query, **field_values(example=example, post_text=post_text)
    )
    return [
        Message(role="system", content=render("basic_system.txt")),
        Message(role="user", content=user),
    ]


def retry_message(error: str, *, post_text: bool = True) -> Message:
    keys = template("post_keys.txt").strip("\n") if post_text else ""
    return Message(role="user", content=render("retry_user.txt", error=error, post_keys=keys))


class BasicPromptBuilder:
    """Basic mode: the paper's direct prompt, no retrieval."""

    mode = "basic"

    def build(self, query: str) -> Prompt:
        return Prompt(mode="basic", query=query, messages=basic_messages(query))
