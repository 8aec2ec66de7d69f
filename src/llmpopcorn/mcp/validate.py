"""What an agent may pass to the MCP tools, checked like the studio's API, and what goes
back: the same caps as the web request (:class:`llmpopcorn.web.requests.RunRequest`:
a 2,000-character query, at most 200 references, 10 variants), run ids checked against
the id format before any lookup (a bad one is never echoed), and every string of an
answer with invisible and bidi characters written as visible ``\\uXXXX`` escapes."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from llmpopcorn.core.paths import escape_unsafe_json

#: a studio/MCP job id: ``secrets.token_hex(6)`` (:meth:`llmpopcorn.web.jobs.JobManager.submit`)
RUN_ID = re.compile(r"[0-9a-f]{12}")
MAX_TEXT = 2_000  # the query's own cap; prompts and search text get the same
MAX_SEARCH = 200  # the studio's history search
MAX_LIMIT = 200
MAX_WAIT_S = 3_600.0


class ArgumentError(ValueError):
    """An argument out of its range; the message names it and never holds its value."""


def check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ArgumentError(
            "run_id is not a run id (12 hexadecimal characters) (hint: list_runs shows the ids)"
        )
    return run_id


def run_request(**fields: Any) -> Any:
    """A :class:`RunRequest` (the studio's caps), or :class:`ArgumentError` naming the
    fields at fault."""
    from llmpopcorn.web.requests import RunRequest

    try:
        return RunRequest(**fields)
    except ValidationError as exc:
        raise ArgumentError(f"invalid arguments: {problems(exc)}") from None


def check_text(name: str, value: Any, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ArgumentError(f"{name} must be text of at most {limit:,} characters")
    return value


def check_page(limit: Any, offset: Any) -> tuple[int, int]:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ArgumentError(f"limit must be between 1 and {MAX_LIMIT}")
    if not isinstance(offset, int) or not 0 <= offset <= 10**9:
        raise ArgumentError("offset must be 0 or more")
    return limit, offset


def check_wait(seconds: Any) -> float:
    if not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_WAIT_S:
        raise ArgumentError(f"wait_seconds must be between 0 and {MAX_WAIT_S:g}")
    return float(seconds)


def problems(exc: ValidationError) -> str:
    """``field: what is wrong`` for each error, without the values given."""
    return "; ".join(
        f"{'.'.join(str(x) for x in err['loc']) or 'arguments'}: {err['msg']}"
        for err in exc.errors()
    )


def escaped(data: Any) -> Any:
    """``data`` with every string's invisible and bidi characters as ``\\uXXXX`` text."""
    if isinstance(data, str):
        return escape_unsafe_json(data)
    if isinstance(data, dict):
        return {escaped(key): escaped(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [escaped(value) for value in data]
    return data
