"""Safe text and file names from user text, and run directories that cannot escape their root."""

from __future__ import annotations

import csv
import json
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from llmpopcorn.core.errors import InputError

MAX_QUERY_CHARS = 2000
_NON_SLUG = re.compile(r"[^a-z0-9]+")
#: the zero-width joiner and non-joiner: invisible, but they cannot reorder text, and
#: between two visible characters they are part of the text (emoji ZWJ sequences such
#: as a family or a rainbow flag, Indic conjuncts, Persian words); kept only there
_JOINERS = frozenset("\u200c\u200d")
#: the subdivision flags (England, Scotland, Wales): a black flag then invisible tag
#: letters; tags anywhere else are removed (they can smuggle invisible text)
_EMOJI_TAG_SEQUENCE = re.compile(
    "\U0001f3f4[\U000e0030-\U000e0039\U000e0061-\U000e007a]{2,6}\U000e007f"
)


#: characters that need a look: anything but printable ASCII
_NOT_PLAIN_ASCII = re.compile(r"[^\x20-\x7e]")
_JSON_WHITESPACE = frozenset("\n\r\t")
_Replace = Callable[[str], str]


def _visible(ch: str) -> bool:
    """A letter, mark or symbol: what a joiner may stand between."""
    return unicodedata.category(ch)[0] in "LMS"


def _unsafe_positions(text: str) -> list[tuple[int, bool]]:
    """(index, is a control character) of every character :func:`strip_unsafe` drops."""
    found: list[tuple[int, bool]] = []
    flag_tags: set[int] | None = None
    last = len(text) - 1
    for match in _NOT_PLAIN_ASCII.finditer(text):
        i = match.start()
        ch = text[i]
        cat = unicodedata.category(ch)
        if cat == "Cc":
            found.append((i, True))
            continue
        if cat[0] != "C":
            continue
        if ch in _JOINERS and 0 < i < last and _visible(text[i - 1]) and _visible(text[i + 1]):
            continue
        if "\U000e0000" <= ch <= "\U000e007f":
            if flag_tags is None:
                flag_tags = {
                    j
                    for m in _EMOJI_TAG_SEQUENCE.finditer(text)
                    for j in range(m.start() + 1, m.end())
                }
            if i in flag_tags:
                continue
        found.append((i, False))
    return found


def _rewrite_unsafe(text: str, control: _Replace, hidden: _Replace) -> str:
    if text.isprintable():  # fast path: no Cc/Cf/Co/Cs/Cn character (spaces aside)
        return text
    parts: list[str] = []
    start = 0
    for i, is_control in _unsafe_positions(text):
        parts += (text[start:i], control(text[i]) if is_control else hidden(text[i]))
        start = i + 1
    parts.append(text[start:])
    return "".join(parts)


def strip_unsafe(text: str) -> str:
    """``text`` without control or invisible formatting characters.

    Control characters (tabs, newlines, NUL, ESC, the C1 controls...: Unicode category
    Cc) become spaces; formatting, private-use, surrogate and unassigned characters (Cf,
    Co, Cs, Cn) are removed. That drops the bidirectional marks, overrides and isolates
    (U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069), zero-width spaces and the BOM,
    which could make a title in a terminal, a spreadsheet, a prompt or a report read
    differently from what it is. Kept: a zero-width joiner or non-joiner between two
    letters, marks or symbols (emoji ZWJ sequences, Indic and Persian text), and the
    tags of a subdivision-flag emoji. The one helper for this: the query, corpus text,
    the LLM's ideas and the report all go through it.
    """
    return _rewrite_unsafe(text, lambda _: " ", lambda _: "")


def escape_unsafe_json(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with every character that
    :func:`strip_unsafe` would drop written as a ``\\uXXXX`` escape instead.

    For data kept verbatim on purpose (the LLM's raw replies in a run record): it reads
    back as the same strings, but a terminal, an editor or ``grep`` showing the file
    cannot be reordered by it. Outside strings JSON holds only ASCII, so every such
    character is inside a string, where an escape is valid; the layout's newlines stay.
    """

    def escape(ch: str) -> str:
        return ch if ch in _JSON_WHITESPACE else json.dumps(ch)[1:-1]

    return _rewrite_unsafe(text, escape, escape)


#: how a spreadsheet formula starts (OWASP's CSV injection list)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text starting like a formula (a title
    ``=HYPERLINK(...)`` from an LLM) gets a leading apostrophe; numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_csv(fh: IO[str], columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """``rows`` as CSV with a header, every text cell :func:`spreadsheet_safe`; keys not
    in ``columns`` are left out."""
    writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: spreadsheet_safe(v) for k, v in row.items()})


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
