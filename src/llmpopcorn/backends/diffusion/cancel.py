"""Stopping a diffusion render between denoising steps.

A caller that can be cancelled (a web job) sets a *stop check* around its work with
:func:`stop_check`: a callable that returns when the work may go on and raises the
caller's own exception when it must stop. Every diffusers render in that context calls
it after each denoising step (``callback_on_step_end``); when it raises, the pipeline is
asked to stop (``pipe._interrupt = True``, which diffusers pipelines check at the top of
each step) and the render raises that same exception once the pipeline returns, so a
50-step render ends within one step instead of running to the end. A context variable,
so the job's code path (Pipeline, renderers) needs no new argument, and a render in
another thread or context is never stopped by mistake.

Light at import (no torch): the web layer imports it without loading a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_STOP_CHECK: ContextVar[Callable[[], None] | None] = ContextVar("popcorn_render_stop", default=None)


@contextmanager
def stop_check(check: Callable[[], None] | None) -> Iterator[None]:
    """Renders run inside this block call ``check()`` after each denoising step."""
    token = _STOP_CHECK.set(check)
    try:
        yield
    finally:
        _STOP_CHECK.reset(token)


def current_stop_check() -> Callable[[], None] | None:
    """The stop check of this context (None: renders are never stopped early)."""
    return _STOP_CHECK.get()
