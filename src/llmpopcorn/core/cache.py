"""Where LLMPopcorn keeps what it builds once (embeddings, exported models), and
the two tools every cache writer shares: a cross-process file lock and atomic writes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from llmpopcorn.core.settings import Settings

log = logging.getLogger(__name__)


def default_cache_dir(settings: Settings | None = None) -> Path:
    """``settings.cache_dir``, else ``$POPCORN_CACHE_DIR`` (what settings would read, for
    callers without settings such as the scorer's embedder), else
    ``$XDG_CACHE_HOME/llmpopcorn``, else ``~/.cache/llmpopcorn``."""
    if settings is not None and settings.cache_dir:
        return Path(settings.cache_dir).expanduser()
    if settings is None and os.environ.get("POPCORN_CACHE_DIR"):
        return Path(os.environ["POPCORN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "llmpopcorn"


@contextmanager
def file_lock(path: str | Path, what: str = "the embedding cache") -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created when missing) for the block, so that
    a second process building the same thing waits and then reuses the first one's
    work. The lock dies with its process (``flock``), so a crash never leaves a stale
    lock. Yields False, unlocked, where no lock file can be made (read-only or full
    disk, no ``fcntl``): the work then simply runs without one."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield False
        return
    try:
        handle = open(path, "a+b")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        log.debug("no lock file %s (%s): building without one", path, exc)
        yield False
        return
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is building %s: waiting for it (%s)", what, path)
            started = time.perf_counter()
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            log.warning("waited %.1f s for the other build", time.perf_counter() - started)
        yield True
    finally:
        handle.close()


def atomic_write(path: Path, write) -> None:
    """Call ``write(file object)`` on a temporary file beside ``path``, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
