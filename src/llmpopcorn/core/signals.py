"""SIGTERM and SIGHUP end a run the way Ctrl-C does.

``docker stop``, systemd and CI runners send SIGTERM; closing a terminal sends
SIGHUP. Inside :func:`signals_as_interrupts` both raise :class:`Interrupted`, a
:class:`KeyboardInterrupt`, so every ``except KeyboardInterrupt`` / ``finally`` that
already saves work for Ctrl-C (the run record and report in ``Pipeline.make``, the
study's cell in ``bench``) does the same for them. The CLI exits with
``128 + signum`` (143 for SIGTERM, 129 for SIGHUP, 130 for Ctrl-C).

Only the first signal raises: a second one while the first is being handled is
ignored, so the record and report being written are not cut short (SIGKILL still
ends the process).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: signals turned into :class:`Interrupted` (SIGINT keeps Python's KeyboardInterrupt)
HANDLED = ("SIGTERM", "SIGHUP")


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by a signal."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.signal_name = signal.Signals(self.signum).name
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code(exc: KeyboardInterrupt) -> int:
    """The shell convention: 128 + the signal's number (Ctrl-C: 130)."""
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


@contextmanager
def signals_as_interrupts(names: tuple[str, ...] = HANDLED) -> Iterator[None]:
    """Within the block, the named signals raise :class:`Interrupted`.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    The previous handlers are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame) -> None:
        if fired:  # already unwinding: let the cleanup finish
            return
        fired.append(signum)
        raise Interrupted(signum)

    previous = {}
    for name in names:
        signum = getattr(signal, name, None)
        if signum is not None:  # no SIGHUP on Windows
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
