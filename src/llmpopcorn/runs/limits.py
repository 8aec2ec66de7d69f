"""Back-pressure on an LLM: requests spaced to a rate, and a cap on how many a batch
makes (``llm_rpm``, ``max_batch_llm_calls``); shared by batches and the study."""

from __future__ import annotations

import threading
import time
from typing import Any

from llmpopcorn.runs.driver import BudgetError


class RateLimiter:
    """At most ``per_minute`` acquisitions a minute, evenly spaced (thread-safe)."""

    def __init__(self, per_minute: float):
        self.interval = 60.0 / per_minute
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        wait = start - now
        if wait > 0:
            time.sleep(wait)
        return wait

    def hold(self) -> None:
        """No slot earlier than one interval from now (a call just ended: it reached the
        server at some point before, so the next one is at least an interval later)."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + self.interval)


class LimitedLLM:
    """An LLM behind a rate limit and a call cap; everything else is the wrapped LLM's."""

    def __init__(self, llm, limiter: RateLimiter | None = None, max_calls: int | None = None):
        self._llm = llm
        self._limiter = limiter
        self._max_calls = max_calls
        self.calls = 0
        self._lock = threading.Lock()
        self._first = threading.Lock()
        self._first_done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def complete(self, request):
        with self._lock:
            if self._max_calls is not None and self.calls >= self._max_calls:
                raise BudgetError(
                    f"this batch reached its cap of {self._max_calls} LLM requests",
                    "raise max_batch_llm_calls (POPCORN_MAX_BATCH_LLM_CALLS) and resume",
                )
            self.calls += 1
        if self._limiter is None:
            return self._llm.complete(request)
        if not self._first_done:
            # the first call goes alone: an HTTP client's one-time start-up would hold
            # the first calls and release them together, past the limit
            with self._first:
                if not self._first_done:
                    self._limiter.acquire()
                    try:
                        return self._llm.complete(request)
                    finally:
                        self._limiter.hold()
                        self._first_done = True
        self._limiter.acquire()
        return self._llm.complete(request)

    def describe(self):
        return self._llm.describe()
