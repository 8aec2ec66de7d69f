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


@cache
def example_idea() -> dict[str, str]:
    """The example answer shown in the prompt (a reply equal to it is rejected)."""
    return json.loads(template("example.json"))


def example_json() -> str:
    return json.dumps(example_idea(), indent=2, ensure_ascii=False)


def example_block(example: bool = True) -> str:
    """The format example and the sentence that introduces it, or nothing: a backend that
    holds its reply to the answer's schema needs no example of the format, and a small
    model copies it (SmolLM2-135M answered "My cat saw snow for the first time" to "a
    corgi learns to surf" in 5 of 5 seeds)."""
    return render("example_block.txt", example=example_json()) if example else ""


def basic_messages(query: str, *, example: bool = True) -> list[Message]:
    user = render("basic_user.txt", query=query, example=example_block(example))
    return [
        Message(role="system", content=render("basic_system.txt")),
        Message(role="user", content=user),
    ]


def retry_message(error: str) -> Message:
    return Message(role="user", content=render("retry_user.txt", error=error))


class BasicPromptBuilder:
    """Basic mode: the paper's direct prompt, no retrieval."""

    mode = "basic"

    def build(self, query: str) -> Prompt:
        return Prompt(mode="basic", query=query, messages=basic_messages(query))
