"""The ``popcorn`` command: a thin shell over :mod:`llmpopcorn.pipeline`.

Each subcommand lives in its own module and registers itself on :data:`main`.
Errors raised on purpose (:class:`PopcornError`) print ``error:`` and ``hint:``
lines on stderr and exit with status 2; nothing but results goes to stdout.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from ..errors import PopcornError

#: subcommand modules, imported when the CLI starts
COMMAND_MODULES = ("make", "backends", "predictor", "score", "prompt", "corpus", "bench", "serve")


class PopcornGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PopcornError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: work finished so far is saved in the run directory", err=True)
            ctx.exit(130)


@click.group(cls=PopcornGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmpopcorn", prog_name="popcorn")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """LLMPopcorn: turn a query into a micro-video idea, cover, 3-second clip and a
    predicted popularity score.

    \b
    Quick start (offline, no keys, CPU):
      popcorn make "a corgi learns to surf"
    With a real LLM:
      DEEPSEEK_API_KEY=... popcorn make "a corgi learns to surf" --llm deepseek
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
