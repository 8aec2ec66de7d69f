"""What a running studio job reports: each LLM call (variant k of n, attempt m), the
first PE run's index build, and cancelling between them; worker threads run niced."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from llmpopcorn.core.settings import Settings
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.web.job import Job, JobStopped


class ProgressLLM:
    """A pipeline's LLM, wrapped so the job running reports each call: which variant
    (by its seed) and which attempt. Everything else is the wrapped backend's own."""

    def __init__(self, inner: Any):
        self._inner = inner
        self.listener: Callable[[Any], None] | None = None

    def complete(self, request: Any) -> str:
        if self.listener is not None:
            self.listener(request)
        return self._inner.complete(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def progress_pipeline(settings: Settings, **given: Any) -> Pipeline:
    """The default pipeline factory: a Pipeline whose LLM reports each call (variants)."""
    from llmpopcorn.core.registry import registry

    llm = given.pop("llm", None) or registry.create("llm", settings.llm, settings)
    proxy = ProgressLLM(llm)
    pipeline = Pipeline(settings, llm=proxy, **given)
    pipeline.progress = proxy
    return pipeline


def variant_listener(job: Job, settings: Settings) -> Callable[[Any], None]:
    """Emit ``progress`` events for LLM calls: variant k of n (by seed) and the attempt."""
    first = settings.seed if job.request.seed is None else job.request.seed
    attempts: dict[int, int] = {}

    def listen(request: Any) -> None:
        if job.stop is not None:
            raise JobStopped(*job.stop)  # cancelling between variants, not only stages
        # the variant's seed (a re-ask samples with another one, see pipeline.ideate)
        seed = getattr(request, "context", {}).get("variant_seed", getattr(request, "seed", None))
        seed = first if seed is None else seed
        attempts[seed] = attempts.get(seed, 0) + 1
        job.emit(
            "progress",
            stage="ideate",
            variant=seed - first + 1,
            of=settings.variants,
            attempt=attempts[seed],
        )

    return listen


#: niceness added to worker threads (Linux schedules threads separately)
WORKER_NICENESS = 10


def lower_priority() -> None:
    """Run this worker thread at a lower CPU priority than the server's event loop."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: keep the default
        pass


def index_listener(job: Job) -> Callable[[str, int, int], None]:
    """Index-build progress of a first PE run as ``index`` events (at most one per
    whole percent), stopping the build when the job is cancelled."""
    last = [-1]

    def listen(what: str, done: int, total: int) -> None:
        if job.stop is not None:
            raise JobStopped(*job.stop)
        percent = int(100 * done / total) if total else 100
        if percent != last[0]:
            last[0] = percent
            job.emit("index", what=what, done=done, total=total, percent=percent)

    return listen
