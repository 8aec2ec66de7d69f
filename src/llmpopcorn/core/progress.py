"""Progress of long one-time work (embedding a corpus, converting a model): a bar on
stderr, and a per-task listener the web studio streams as a percent.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    pass

log = logging.getLogger(__name__)


#: below this many steps a bar is shown only on a terminal (short work needs none)
QUIET_BELOW = 512


#: a callback ``(what, done, total)`` told of every step of a corpus build in this
#: thread or task (the web studio streams it as the index-build percent of a first PE run)
_LISTENER: contextvars.ContextVar[Callable[[str, int, int], None] | None] = contextvars.ContextVar(
    "popcorn_index_progress", default=None
)


@contextmanager
def progress_listener(callback: Callable[[str, int, int], None]) -> Iterator[None]:
    """Call ``callback(what, done, total)`` as corpus builds started inside the block
    advance (an exception it raises, e.g. a cancel, stops the build; finished chunks are
    kept and a later build resumes from them)."""
    token = _LISTENER.set(callback)
    try:
        yield
    finally:
        _LISTENER.reset(token)


class Progress:
    """A progress bar on stderr: count, rate and time left, on one line. On a terminal it
    redraws that line; elsewhere (a log, CI) it writes the estimate once the first batch
    is done and ends the same line with the time taken, with one more line every
    :attr:`every` seconds only for work that long."""

    every = 60.0

    def __init__(
        self,
        total: int,
        what: str,
        *,
        show: bool | None = None,
        stream=None,
        noun: str = "to embed",
    ):
        import sys

        self.total, self.what, self.noun = total, what, noun
        self.stream = stream or sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.show = (tty if show is None else show) or (show is None and total > QUIET_BELOW)
        self.tty = tty
        self.done = 0
        self.started = time.perf_counter()
        self._last = self.started
        self._open = False  # a log line written and not yet ended (not on a terminal)

    def advance(self, n: int) -> None:
        self.done += n
        listener = _LISTENER.get()
        if listener is not None:
            listener(self.what, self.done, self.total)
        now = time.perf_counter()
        if not self.show:
            return
        if self.tty:
            self._write(self.line(now), newline=False)
            return
        if not self._open and self._last == self.started and self.done < self.total:
            # after the first batch: how long the whole will take
            rate = self.done / max(now - self.started, 1e-9)
            self._write(
                f"{self.what}: {self.total:,} {self.noun}, about "
                f"{_clock((self.total - self.done) / rate)} at {_rate(rate)} ...",
                newline=False,
            )
            self._open, self._last = True, now
        elif now - self._last >= self.every and self.done < self.total:
            self._write(("\n" if self._open else "") + self.line(now), newline=False)
            self._open, self._last = True, now
        if self.done >= self.total:
            self._finish(now)

    def _finish(self, now: float) -> None:
        took = f"done in {_clock(now - self.started)}"
        if self._open:
            self._write(f" {took}", newline=True)
        else:
            self._write(f"{self.line(now)}, {took}", newline=True)
        self._open = False

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        share = self.done / self.total if self.total else 1.0
        width = 24
        filled = int(width * share)
        return (
            f"{self.what}: [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done:,}/{self.total:,} ({share:.0%}) {_rate(rate)} ETA {_clock(left)}"
        )

    def _write(self, text: str, newline: bool) -> None:
        try:
            self.stream.write(("\r" + text + "\x1b[K") if self.tty and not newline else text)
            if newline:
                self.stream.write("\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed stream: progress is optional
            self.show = False

    def close(self) -> None:
        if self.show and self.total and self.tty:
            self._write("", newline=True)
        elif self._open:  # stopped before the end (an error, a cancel)
            self._write(" stopped", newline=True)
            self._open = False


@contextmanager
def one_time(what: str, *, stream=None) -> Iterator[None]:
    """One line on stderr for one-time work of unknown length (converting a model):
    ``what ...`` when it starts, ``done in 0:12`` appended when it ends (``failed`` if
    it raises). On a terminal or in a log alike, it stays one line."""
    import sys

    out = stream or sys.stderr
    started = time.perf_counter()

    def write(text: str) -> None:
        try:
            out.write(text)
            out.flush()
        except (OSError, ValueError):  # a closed stream: progress is optional
            pass

    write(f"{what} ...")
    try:
        yield
    except BaseException:
        write(" failed\n")
        raise
    write(f" done in {_clock(time.perf_counter() - started)}\n")


def _rate(rate: float) -> str:
    """``86/s``, or for slow steps the time each takes (``12 s each``, never ``0/s``)."""
    if rate >= 1 or rate <= 0:
        return f"{rate:,.0f}/s"
    return f"{1 / rate:,.0f} s each"


def _clock(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
