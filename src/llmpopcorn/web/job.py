"""A studio job: what was asked, its state and its event stream (what the page follows)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from llmpopcorn.core.errors import PopcornError
from llmpopcorn.core.settings import Settings
from llmpopcorn.web.requests import RunRequest

KIND = "web"
GROUP = "studio"
STORE_NAME = "store.sqlite"
WEB_FOLDER = "web"
TERMINAL = frozenset({"done", "failed", "cancelled", "interrupted"})
LIVE = frozenset({"queued", "running"})
DEFAULT_LEASE_S = 600.0
MAX_ERROR_CHARS = 1_000
#: finished jobs kept in memory for late event-stream readers (the store keeps them all)
RECENT_JOBS = 256
INTERRUPTED = "interrupted: the server stopped before this run finished"
KEY_LOST = (
    "interrupted: this queued run needed the API key typed into the page, which is not "
    "kept across a server restart"
)
KEY_LOST_HINT = "run it again (retry) and type the key again"


class JobBusy(PopcornError):
    """The job is still queued or running (it cannot be run again yet)."""


class JobStopped(Exception):
    """Raised inside a running job at a stage boundary (cancel, or server shutdown)."""

    def __init__(self, state: str, message: str):
        super().__init__(message)
        self.state = state


@dataclass
class Job:
    id: str
    request: RunRequest  # may hold a typed key: memory of this process only
    settings: Settings
    lane: str
    state: str = "queued"
    submitted: float = field(default_factory=time.time)
    events: list[dict[str, Any]] = field(default_factory=list)
    stop: tuple[str, str] | None = None  # (state, message) once asked to stop
    seq: int = 0  # queue order (submission, or the store's order for re-queued jobs)
    finishing: bool = False  # its end is being written (the state changes after the store)
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def key(self) -> str:
        return f"{KIND}:{self.id}"

    def emit(self, kind: str, **data: Any) -> None:
        with self.cond:
            self.events.append({"seq": len(self.events), "type": kind, "t": time.time(), **data})
            self.cond.notify_all()
