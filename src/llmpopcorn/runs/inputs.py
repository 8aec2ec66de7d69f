"""Bounded inputs of batches: the query file and the batch's size options.

A query file is read line by line with a cap on the bytes of a line, on the lines and on
the bytes in all, so an endless input (``/dev/zero``, a pipe that never closes) ends in
a clear error after a bounded read, never in memory growth; each read returns to Python,
so SIGTERM and Ctrl-C stop it at once.

The limits, and why:

- ``-k/--concurrency`` 1..256: LLM calls at once, one thread each; providers allow tens
  of concurrent requests, and 40,000 threads ended in ``can't start new thread``;
- ``--variants`` 1..50: the settings' own range (ideas ranked per query);
- ``--render-slots`` 1..64: renders at once, one per GPU at most in practice.
"""

from __future__ import annotations

import os
import select
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from llmpopcorn.core.errors import ConfigError, InputError
from llmpopcorn.core.paths import MAX_QUERY_CHARS, clean_query

MAX_QUERIES = 10_000
#: a query is at most MAX_QUERY_CHARS characters of up to 4 UTF-8 bytes, plus the newline
MAX_LINE_BYTES = 4 * MAX_QUERY_CHARS + 2
MAX_LINES = 100_000  # comments and blank lines included
MAX_FILE_BYTES = 16 * 1024 * 1024
#: how long a read of a pipe waits before Python looks at pending signals again
PIPE_POLL_S = 0.2

CONCURRENCY = (1, 256)
VARIANTS = (1, 50)
RENDER_SLOTS = (1, 64)


def read_queries(path: str | Path) -> list[str]:
    """One query a line; blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below; a FIFO opens like a file
    except FileNotFoundError:
        raise InputError(
            f"query file not found: {path}", "pass a text file with one query a line"
        ) from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder", "pass a text file with one query a line") from None
    queries: list[str] = []
    total = 0
    with stream:
        lines = _lines(stream)
        for number in range(1, MAX_LINES + 2):
            raw = next(lines, b"")
            if not raw:
                break
            total += len(raw)
            _check_bounds(path, number, raw, total)
            query = _query_of(path, number, raw)
            if query is not None:
                queries.append(query)
                if len(queries) > MAX_QUERIES:
                    raise InputError(
                        f"{path} holds more than {MAX_QUERIES} queries; at most "
                        f"{MAX_QUERIES} a batch",
                        "split the file into several batches",
                    )
    if not queries:
        raise InputError(f"{path} holds no query", "write one query a line")
    return queries


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of ``stream``, each cut at ``MAX_LINE_BYTES + 1`` bytes (so an overlong one
    is seen as such). A pipe or device is read only once :func:`select.select` says it is
    ready, waiting at most :data:`PIPE_POLL_S` at a time: the main thread comes back to
    Python between waits, so a SIGTERM or Ctrl-C stops a batch waiting on a silent pipe
    whichever thread the kernel gave the signal to."""
    if stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
        yield from iter(lambda: stream.readline(MAX_LINE_BYTES + 1), b"")
        return
    fd, pending = stream.fileno(), b""
    while True:
        while b"\n" not in pending and len(pending) <= MAX_LINE_BYTES:
            if not select.select([fd], [], [], PIPE_POLL_S)[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                if pending:
                    yield pending
                return
            pending += chunk
        cut = pending.find(b"\n") + 1 or MAX_LINE_BYTES + 1
        line, pending = pending[:cut], pending[cut:]
        yield line


def _check_bounds(path: Path, number: int, raw: bytes, total: int) -> None:
    if len(raw) > MAX_LINE_BYTES:  # a whole line, newline included, fits in MAX_LINE_BYTES
        raise InputError(
            f"{path}, line {number}: longer than {MAX_LINE_BYTES:,} bytes (a query is at most "
            f"{MAX_QUERY_CHARS} characters)",
            "write one short query a line (is this a text file?)",
        )
    if number > MAX_LINES:
        raise InputError(
            f"{path} has more than {MAX_LINES:,} lines", "split the file into several batches"
        )
    if total > MAX_FILE_BYTES:
        raise InputError(
            f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB",
            "split the file into several batches",
        )


def _query_of(path: Path, number: int, raw: bytes) -> str | None:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            f"{path}, line {number} is not UTF-8 text", "save the query file as UTF-8"
        ) from None
    if number == 1:
        line = line.removeprefix("\ufeff")
    line = line.rstrip("\r\n")
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    try:
        return clean_query(line)
    except InputError as exc:
        raise InputError(f"{path}, line {number}: {exc.message}", exc.hint) from None


def check_limits(
    *, concurrency: int | None = None, variants: int | None = None, render_slots: int | None = None
) -> None:
    """Each given option within its range (see the module docstring), else a
    :class:`ConfigError` naming the option, the value and the range."""
    for flag, value, (low, high), example in (
        ("-k/--concurrency", concurrency, CONCURRENCY, "-k 8"),
        ("--variants", variants, VARIANTS, "--variants 3"),
        ("--render-slots", render_slots, RENDER_SLOTS, "--render-slots 1"),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(
                f"{flag} must be between {low} and {high}, got {value!r}",
                f"e.g. {example}",
            )
