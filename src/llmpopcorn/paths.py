"""Safe text and file names from user text, and run directories that cannot escape their root."""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from pathlib import Path

from .errors import InputError

MAX_QUERY_CHARS = 2000
_NON_SLUG = re.compile(r"[^a-z0-9]+")
#: kept although invisible: the zero-width joiner that binds emoji sequences (it
#: cannot reorder text; the MicroLens titles use it)
_KEEP_FORMAT = frozenset("\u200d")


def strip_unsafe(text: str) -> str:
    """``text`` without control or invisible formatting characters.

    Control characters (tabs, newlines, NUL, ESC...: Unicode category Cc) become spaces;
    formatting, private-use, surrogate and unassigned characters (Cf, Co, Cs, Cn) are
    removed. That drops the bidirectional overrides and isolates (U+202A-U+202E,
    U+2066-U+2069, U+200E/F), zero-width spaces and the BOM, which could make a title
    in a prompt or a report read differently from what it is. Only the zero-width
    joiner of emoji sequences (U+200D) is kept.
    """
    if text.isprintable():  # fast path: no Cc/Cf/Co/Cs/Cn character (spaces aside)
        return text
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cc":
            out.append(" ")
        elif cat[0] != "C" or ch in _KEEP_FORMAT:
            out.append(ch)
    return "".join(out)


def clean_query(query: str | None) -> str:
    """Validate a query: collapse whitespace, drop control and bidi characters
    (:func:`strip_unsafe`), bound its size."""
    if query is None:
        raise InputError(
            "no query given", 'pass a query, e.g. popcorn make "a corgi learns to surf"'
        )
    text = " ".join(strip_unsafe(str(query)).split())
    if not text:
        raise InputError(
            "the query is empty", 'describe the video you want, e.g. "a corgi learns to surf"'
        )
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(
            f"the query has {len(text)} characters; at most {MAX_QUERY_CHARS} are accepted",
            "shorten the query to a sentence or two",
        )
    return text


def slugify(text: str, max_len: int = 40, default: str = "query") -> str:
    """ASCII lowercase words joined by '-'; never empty, never a path."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = _NON_SLUG.sub("-", ascii_text.lower()).strip("-")
    slug = slug[:max_len].rstrip("-")
    return slug or default


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def make_run_dir(root: Path, query: str, run_id: str) -> Path:
    """Create ``root/<run_id>-<slug>`` and check it really is inside ``root``."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    resolved_root = root.resolve()
    path = (resolved_root / f"{run_id}-{slugify(query)}").resolve()
    if path.parent != resolved_root:  # defence in depth: slugify already forbids this
        raise InputError("refusing to write outside the output directory", str(resolved_root))
    path.mkdir(parents=False, exist_ok=False)
    return path
