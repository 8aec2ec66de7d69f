"""Calls released at once: threads that wait on a barrier, so they overlap whatever the load."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def run_together(fn: Callable[..., Any], calls: list[tuple]) -> list[Any]:
    """``fn(*args)`` for each ``args`` in ``calls``, each in its own thread, all started
    by one barrier; the results in the order of ``calls`` (an exception is re-raised)."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(*calls[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
