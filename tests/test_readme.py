"""Every command in the README is exercised: each ```bash block carries a comment saying how,
and this test does it.

- ``<!-- readme-test: run -->``: every ``popcorn`` command of the block runs (in process) and
  must succeed. Nothing reaches a real server: ``--llm deepseek/openai/ollama/vllm/llamacpp``
  talk to a local fake OpenAI-compatible server (``POPCORN_LLM_BASE_URL``), ``pexels`` /
  ``pixabay`` to a local fake of their APIs (``POPCORN_IMAGE_OPTIONS`` / ``..._VIDEO_...``),
  ``export NAME=...`` sets a test value, and ``../shared/data`` is a small corpus written here.
- ``<!-- readme-test: parse tests/test_x.py -->``: commands that need a GPU, a model, a key for
  a paid service, a long run or a server that keeps running: each ``popcorn`` command is parsed
  by the CLI itself (its subcommand, options and values must be valid), each ``pip install -e
  '.[extra]'`` names an extra that exists, and the named test, which runs what the block does
  against fakes or tiny models, must exist.
- ``<!-- readme-test: ci -->``: the lines are run verbatim by ``.ci/run``.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(?:<!-- readme-test: ([^>]*?) -->\n)?```bash\n(.*?)```", re.S)
FAKE_KEY = "sk-readme-test"
LLM_SERVERS = {"deepseek", "openai", "ollama", "vllm", "llamacpp"}
STOCK = {"pexels", "pixabay"}


def readme_blocks() -> list[tuple[str, str]]:
    return [(mark or "", code) for mark, code in BLOCK.findall(README.read_text("utf-8"))]


def block_id(code: str) -> str:
    """A block's first command, short: the test id."""
    first = next((c for c in commands(code) if c[0] not in ("export", "pip")), ["?"])
    return " ".join(first[:4])[:48]


def commands(code: str) -> list[list[str]]:
    """The commands of a block: continuations joined, comments dropped, ``a && b`` split, a
    redirection dropped (``> file``), optional ``[--flag value]`` taken as written."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        tokens = [t.strip("[]") for t in shlex.split(line, comments=True)]
        segment: list[str] = []
        for token in [*tokens, "&&"]:
            if token != "&&":
                segment.append(token)
                continue
            if ">" in segment:
                segment = segment[: segment.index(">")]
            if segment:
                out.append(segment)
            segment = []
    return out


def split_env(command: list[str]) -> tuple[dict[str, str], list[str]]:
    """``NAME=value cmd ...`` -> ({NAME: value}, [cmd, ...]); ``...`` values become a key."""
    env = {}
    while command and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", command[0]):
        name, value = command.pop(0).split("=", 1)
        env[name] = FAKE_KEY if value in ("...", "") else value
    return env, command


def test_every_block_says_how_it_is_checked():
    blocks = readme_blocks()
    assert len(blocks) >= 10
    unmarked = [code.splitlines()[0] for mark, code in blocks if not mark]
    assert not unmarked, f"README blocks with no readme-test comment: {unmarked}"
    for mark, _ in blocks:
        how, *named = mark.split()
        assert how in ("run", "parse", "ci"), mark
        assert how != "parse" or (named and (ROOT / named[0]).is_file()), f"no test: {mark}"


def test_ci_blocks_are_run_verbatim_by_ci():
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    for mark, code in readme_blocks():
        if mark == "ci":
            for line in code.splitlines():
                if line.strip() and not line.startswith("#"):
                    assert line in ci, f".ci/run does not run: {line}"  # verbatim, maybe wrapped


# -- parse ---------------------------------------------------------------------------------


def parse(args: list[str]) -> None:
    """Resolve ``popcorn ARGS`` to its command and parse every option and argument, as the
    CLI would, without running it (a wrong name, option or value raises)."""
    from llmpopcorn.cli import main

    ctx = main.make_context("popcorn", list(args))
    command, rest = main, [*ctx._protected_args, *ctx.args]
    while isinstance(command, click.Group):
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]


def check_pip(command: list[str]) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    known = set(extras["optional-dependencies"])
    for token in command:
        match = re.fullmatch(r"\.\[([a-z0-9,_-]+)\]", token)
        if match:
            assert set(match.group(1).split(",")) <= known, f"no such extra: {token}"


@pytest.mark.parametrize(
    "code", [code for mark, code in readme_blocks() if mark.startswith("parse")], ids=block_id
)
def test_parse_blocks_are_valid_commands(code):
    for command in commands(code):
        if "=$(" in command[0]:
            continue  # NAME=$(...): a shell variable for the next line (the named test checks it)
        env, command = split_env(command)
        if not command or command[0] == "export":
            continue
        if command[0] == "pip":
            check_pip(command)
        elif command[0] == "popcorn":
            parse([a.replace("$BASE", "base.gguf") for a in command[1:]])
        elif command[:2] == ["python", "-m"]:
            continue  # a test command (the ci block runs the suite)
        elif command[0] == "python":
            assert (ROOT / command[1]).is_file(), command
        else:
            raise AssertionError(f"not a command this test knows: {command}")


# -- run -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small corpus in the layout of ../shared/data (MicroLens table and the query files):
    four categories of 60-90 videos, so PE's default minimum category size holds."""
    from pe_fixtures import ANIMAL, FOOD, GAME, SPORTS, write_corpus

    rows, video = [], 0
    for category, titles in (
        ("Animal", ANIMAL),
        ("Game", GAME),
        ("Delicacy", FOOD),
        ("Sports", SPORTS),
    ):
        for i in range(max(60, len(titles))):
            video += 1
            title = f"{titles[i % len(titles)]} #{category.lower()} {i}"
            rows.append(
                {
                    "video_id": str(900_000 + video),
                    "title_en": title,
                    "cover_desc": title,
                    "caption_en": "",
                    "partition": category,
                    "likes": 10 * i,
                    "views": 100 * i,
                    "comment_count": 1 + (i * 7) % 97,
                }
            )
    root = write_corpus(tmp_path_factory.mktemp("readme") / "data", rows)
    (root / "prompts").mkdir()
    (root / "prompts" / "abstract_prompts.txt").write_text("Something that feels like home\n")
    (root / "prompts" / "concrete_prompts.txt").write_text("A corgi learns to surf\n")
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme-cache")  # one ONNX export and index for the module


def idea_reply() -> str:
    import json

    return json.dumps(
        {
            "title": "Corgi rides its first wave",
            "cover_prompt": "A corgi on a surfboard, golden light, vertical 9:16 photo.",
            "video_prompt": "A corgi paddles, stands and rides a small wave; tracking shot.",
            "caption": "He has been practising all summer. Would you try it?",
            "hashtags": ["#corgi", "#surfing", "#DogsOfTikTok"],
            "keywords": ["corgi", "surfing dog"],
        }
    )


@pytest.mark.parametrize(
    "code", [code for mark, code in readme_blocks() if mark == "run"], ids=block_id
)
def test_run_blocks_succeed(code, data_dir, cache_dir, tmp_path):
    from fake_openai_server import FakeOpenAIServer, completion
    from fake_stock_server import FakeStock
    from llmpopcorn.cli import main

    exported: dict[str, str] = {}
    with FakeOpenAIServer() as llm, FakeStock() as stock:
        llm.queue(200, completion(idea_reply()))
        for command in commands(code):
            env, command = split_env(command)
            if command and command[0] == "export":
                exported.update(split_env(command[1:])[0])
                continue
            assert command and command[0] == "popcorn", f"a run block runs popcorn: {command}"
            args = [
                a.replace("../shared/data", str(data_dir)).replace(
                    "http://127.0.0.1:9000/v1", llm.url
                )
                for a in command[1:]
            ]
            env = {
                **exported,
                **env,
                "POPCORN_OUT": str(tmp_path / "out"),
                "POPCORN_CACHE_DIR": str(cache_dir),
            }
            if _value(args, "--llm") in LLM_SERVERS and "--llm-base-url" not in args:
                env["POPCORN_LLM_BASE_URL"] = llm.url
            for kind in ("image", "video"):
                if _value(args, f"--{kind}") in STOCK:
                    env[f"POPCORN_{kind.upper()}_OPTIONS"] = f"base_url={stock.api}"
            result = CliRunner().invoke(main, args, env=env)
            assert result.exit_code == 0, f"popcorn {' '.join(args)}\n{result.output}"
    if any(_value(c, "--image") in STOCK or _value(c, "--video") in STOCK for c in commands(code)):
        assert stock.file_requests(), "the stock commands used the fake provider's files"


def _value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args[:-1] else None
