"""The ``popcorn`` command: a thin shell over :mod:`llmpopcorn.pipeline.core`.

Each subcommand lives in its own module and registers itself on :data:`main`.
Every command ends in success or in ``error:`` + ``hint:`` lines on stderr with
exit status 2; nothing but results goes to stdout. The crash-to-message mapping
lives in one place, :meth:`PopcornGroup.invoke`:

- :class:`PopcornError` (raised on purpose): its message and hint;
- ``OSError`` (disk full, permission denied, read-only folder...): what failed,
  on which file, and what to do;
- Ctrl-C, SIGTERM, SIGHUP (:mod:`llmpopcorn.core.signals`): ``error: interrupted by ...``
  and the signal's exit code (130, 143, 129);
- anything else: ``error: <type>: <message>`` and a hint to rerun with ``--debug``
  (or ``-vv``), which also prints the traceback.

Every printed message goes through :func:`llmpopcorn.core.redact.scrub` first.
"""

from __future__ import annotations

import errno
import importlib
import logging
import sys
import traceback

import click

from llmpopcorn.core.errors import PopcornError
from llmpopcorn.core.redact import install_log_filter, scrub
from llmpopcorn.core.signals import exit_code, signals_as_interrupts

#: subcommand modules, imported when the CLI starts
COMMAND_MODULES = (
    "make",
    "backends",
    "predictor",
    "score",
    "prompt",
    "corpus",
    "bench",
    "serve",
    "mcp",
    "batch",
    "runs",
    "feedback",
    "tune",
)

MAX_MESSAGE_CHARS = 1000  # an exception may carry a whole input in its message
DEBUG_HINT = "rerun with --debug (or -vv) to see the traceback; report it if it looks like a bug"
_OS_HINTS = {
    errno.ENOSPC: "free some disk space (or point --out / POPCORN_OUT at another disk) and rerun",
    errno.EDQUOT: "free some space within your disk quota and rerun",
    errno.EACCES: "check the permissions of that path, or choose another folder with --out",
    errno.EPERM: "check the permissions of that path, or choose another folder with --out",
    errno.EROFS: "the file system is read-only: choose a writable folder with --out",
    errno.ENOENT: "check that the path exists",
    errno.EPIPE: "the program reading popcorn's output stopped early",
}


def describe_os_error(exc: OSError) -> tuple[str, str]:
    """A one-line message and a hint for an ``OSError``."""
    what = exc.strerror or type(exc).__name__
    where = f": {exc.filename}" if exc.filename else ""
    hint = _OS_HINTS.get(exc.errno or 0, "check the path and the disk, then rerun")
    return f"{what}{where}", hint


RUN_HINT = "work finished so far is saved in the run directory"
#: after an interrupt, what the commands that resume say
INTERRUPT_HINTS = {
    "bench": "finished cells are saved; rerun the same command to compute the rest",
    "batch": "finished items are saved; rerun the same command (or popcorn batch --resume ID) "
    "to finish the rest",
}


class PopcornGroup(click.Group):
    def invoke(self, ctx: click.Context):
        debug = bool(ctx.params.get("debug")) or (ctx.params.get("verbose") or 0) >= 2
        try:
            with signals_as_interrupts():
                return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException):
            raise  # usage errors (exit 2) and normal exits: click prints them
        except click.exceptions.Abort:
            self._fail(ctx, "aborted", "nothing was asked: rerun the command", debug=False)
        except KeyboardInterrupt as exc:
            reason = str(exc) or "interrupted"
            click.echo(f"error: {reason}", err=True)
            click.echo(f"hint: {INTERRUPT_HINTS.get(ctx.invoked_subcommand, RUN_HINT)}", err=True)
            ctx.exit(exit_code(exc))
        except PopcornError as exc:
            self._fail(ctx, exc.message, exc.hint, debug=debug)
        except OSError as exc:
            message, hint = describe_os_error(exc)
            self._fail(ctx, message, hint, debug=debug)
        except Exception as exc:  # noqa: BLE001 - the one place unexpected errors end
            text = str(exc)
            if len(text) > MAX_MESSAGE_CHARS:
                text = text[:MAX_MESSAGE_CHARS] + f"... ({len(text):,} characters)"
            self._fail(ctx, f"{type(exc).__name__}: {text}", DEBUG_HINT, debug=debug)

    @staticmethod
    def _fail(ctx: click.Context, message: str, hint: str | None, *, debug: bool) -> None:
        if debug:
            click.echo(scrub(traceback.format_exc()).rstrip(), err=True)
        click.echo(f"error: {scrub(message)}", err=True)
        if hint:
            click.echo(f"hint: {scrub(hint)}", err=True)
        ctx.exit(2)


@click.group(cls=PopcornGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmpopcorn", prog_name="popcorn")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show the Python traceback when a command fails.")
def main(verbose: int, debug: bool) -> None:
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
    install_log_filter()  # API keys never reach a log line


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
