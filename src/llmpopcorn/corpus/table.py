"""The MicroLens corpus: load, validate and describe ``microlens/videos.csv``.

The table is read from the data directory setting (``--data`` / ``POPCORN_DATA``)
and never copied into the package. Bad rows are dropped, counted per reason in
``Corpus.rejected`` (shown by ``popcorn corpus info``) and logged with sample ids:

- an empty ``video_id`` or title, a duplicate ``video_id``;
- a count (``comment_count``, ``likes``, ``views``) that is not a finite number, is
  negative or is above :data:`MAX_COUNT` (10**12: more than any real video, and far
  inside int64, so a value such as ``1e30`` is never wrapped to a negative integer);
- a text field longer than its cap in :data:`MAX_FIELD_CHARS` (titles: 1,000
  characters; the longest MicroLens title has 640). Such rows are rejected, not
  truncated: a field that long is almost always a broken CSV (an unclosed quote
  swallowing the rows after it), and half a title would mislead retrieval.

Text is cleaned of control and bidirectional-override characters
(:func:`llmpopcorn.core.paths.strip_unsafe`) before it can reach a prompt or a report.
A missing file or missing columns raise :class:`DataError` naming the fix.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from llmpopcorn.core.errors import DataError
from llmpopcorn.core.paths import strip_unsafe

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

CORPUS_FILE = Path("microlens") / "videos.csv"
REQUIRED_COLUMNS = ("video_id", "title_en", "partition", "comment_count")
OPTIONAL_TEXT = ("cover_desc", "caption_en")
#: a video's text fields as models name them -> the corpus column holding each (the one
#: table of these names: the predictor's inputs, the scorer and the human baseline read it)
TEXT_FIELDS = {"title": "title_en", "cover_desc": "cover_desc", "caption": "caption_en"}
OPTIONAL_COUNTS = ("likes", "views")
#: the largest count accepted (counts are stored as int64; 10**12 is exact in float64)
MAX_COUNT = 10**12
#: the longest text accepted per column; a longer value rejects the row
MAX_FIELD_CHARS = {
    "video_id": 200,
    "title_en": 1_000,
    "partition": 200,
    "cover_desc": 4_000,
    "caption_en": 4_000,
}
ALL_COLUMNS = (
    "video_id",
    "title_en",
    "cover_desc",
    "caption_en",
    "partition",
    "likes",
    "views",
    "comment_count",
)


def resolve_corpus_path(data: str | Path | None) -> Path:
    """The CSV for a data directory (or a CSV path given directly)."""
    if data is None or str(data) == "":
        raise DataError(
            "no data directory is set",
            "pass --data DIR or set POPCORN_DATA to the folder that holds microlens/videos.csv",
        )
    path = Path(data).expanduser()
    if path.is_dir():
        path = path / CORPUS_FILE
    if not path.exists():
        raise DataError(
            f"corpus file not found: {path}",
            "point --data / POPCORN_DATA at the folder that holds microlens/videos.csv",
        )
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _clean_text(series: pd.Series) -> pd.Series:
    return series.fillna("").astype(str).map(strip_unsafe).str.split().str.join(" ")


def item_text(title: str, cover_desc: str = "", caption: str = "") -> str:
    """The content text of one video: title, then cover description and caption when
    they add something (in the shipped table ``cover_desc`` is a copy of the title)."""
    parts = [title.strip()]
    for extra in (cover_desc.strip(), caption.strip()):
        if extra and extra.lower() not in {p.lower() for p in parts}:
            parts.append(extra)
    return ". ".join(p for p in parts if p)


@dataclass
class Corpus:
    """A validated MicroLens table (a pandas DataFrame with clean columns)."""

    frame: pd.DataFrame
    path: Path | None = None
    sha256: str = ""
    rejected: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    @cached_property
    def texts(self) -> list[str]:
        f = self.frame
        return [
            item_text(t, c, p)
            for t, c, p in zip(f["title_en"], f["cover_desc"], f["caption_en"], strict=True)
        ]

    @cached_property
    def categories(self) -> list[str]:
        return sorted(self.frame["partition"].unique().tolist())

    def fields_present(self) -> dict[str, int]:
        """Non-empty values per text column (copies of the title count as absent)."""
        f = self.frame
        return {
            "title_en": int((f["title_en"] != "").sum()),
            "cover_desc": int(((f["cover_desc"] != "") & (f["cover_desc"] != f["title_en"])).sum()),
            "caption_en": int((f["caption_en"] != "").sum()),
        }


def load_corpus(data: str | Path | None, *, require_label: bool = True) -> Corpus:
    """Load and validate the corpus from a data directory or a CSV path."""
    path = resolve_corpus_path(data)
    corpus = read_table(path, require_label=require_label)
    corpus.sha256 = file_sha256(path)
    return corpus


def read_table(path: Path, *, require_label: bool = True) -> Corpus:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty", "expected a CSV with a header row") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path} is not a readable UTF-8 CSV: {exc}", "check the file") from None
    return validate_frame(frame, path=path, require_label=require_label)


def validate_frame(
    frame: pd.DataFrame, *, path: Path | None = None, require_label: bool = True
) -> Corpus:
    """Check columns, clean values and drop bad rows (counted and logged)."""
    import pandas as pd

    where = str(path) if path else "the table"
    frame = frame.rename(columns=lambda c: str(c).strip())
    required = [c for c in REQUIRED_COLUMNS if require_label or c != "comment_count"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where} lacks the column(s): {', '.join(missing)}",
            f"expected columns: {', '.join(ALL_COLUMNS)} "
            "(cover_desc, caption_en, likes, views optional)",
        )
    frame = frame.copy()
    for col in OPTIONAL_TEXT:
        if col not in frame.columns:
            frame[col] = ""
    for col in ("video_id", "title_en", "partition", *OPTIONAL_TEXT):
        frame[col] = _clean_text(frame[col])
    frame.loc[frame["partition"] == "", "partition"] = "Unknown"
    rejected: dict[str, int] = {}
    samples: dict[str, list[str]] = {}

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal frame
        mask = mask.reindex(frame.index, fill_value=False)  # rows dropped before stay out
        n = int(mask.sum())
        if n:
            rejected[reason] = rejected.get(reason, 0) + n
            samples[reason] = frame.loc[mask, "video_id"].head(3).tolist()
            frame = frame.loc[~mask]

    drop(frame["video_id"] == "", "empty video_id")
    drop(frame["title_en"] == "", "empty title")
    for col, cap in MAX_FIELD_CHARS.items():
        drop(frame[col].str.len() > cap, f"{col} longer than {cap:,} characters")
    count_cols = [c for c in (*OPTIONAL_COUNTS, "comment_count") if c in frame.columns]
    for col in count_cols:
        drop_bad_counts(frame[col], col, drop)
        # every value left is blank (optional columns) or a number in [0, MAX_COUNT]:
        # only now is the cast to int64 safe
        values = pd.to_numeric(frame[col].astype(str).str.strip(), errors="coerce")
        frame[col] = values.astype("float64").fillna(0).round().astype("int64")
    drop(frame["video_id"].duplicated(keep="first"), "duplicate video_id")
    if rejected:
        detail = "; ".join(
            f"{n} {reason} (e.g. ids {samples[reason]})" for reason, n in rejected.items()
        )
        log.warning("%s: dropped %d row(s): %s", where, sum(rejected.values()), detail)
    if frame.empty:
        raise DataError(f"{where} has no usable rows", "check the file's contents and columns")
    return Corpus(frame=frame.reset_index(drop=True), path=path, rejected=rejected)


def drop_bad_counts(column: pd.Series, col: str, drop) -> None:
    """Reject values of a count column that are not numbers, not finite, negative or
    above :data:`MAX_COUNT` (blank is allowed in the optional ``likes``/``views``)."""
    import numpy as np
    import pandas as pd

    raw = column.astype(str).str.strip()
    # float64 holds any magnitude (1e30, 10**25 -> finite; "inf" -> inf); never int64 here
    values = pd.to_numeric(raw, errors="coerce").astype("float64")
    blank_ok = (raw == "") & (col != "comment_count")
    drop(values.isna() & ~blank_ok, f"non-numeric {col}")
    drop(np.isinf(values), f"infinite {col}")
    drop(values < 0, f"negative {col}")
    drop(values > MAX_COUNT, f"{col} above {MAX_COUNT:.0e}")


COMMENT_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def corpus_summary(corpus: Corpus) -> dict:
    """What ``popcorn corpus info`` shows: size, categories, comment-count quantiles and
    which text fields carry information."""
    f = corpus.frame
    counts = f["partition"].value_counts()
    categories = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    quantiles = f["comment_count"].quantile(list(COMMENT_QUANTILES))
    return {
        "path": str(corpus.path) if corpus.path else None,
        "sha256": corpus.sha256,
        "rows": len(corpus),
        "rejected": dict(corpus.rejected),
        "categories": {str(name): int(n) for name, n in categories},
        "comment_count_quantiles": {f"{q:g}": float(v) for q, v in quantiles.items()},
        "fields_present": corpus.fields_present(),
        "cover_desc_copies_title": int(
            ((f["cover_desc"] != "") & (f["cover_desc"] == f["title_en"])).sum()
        ),
    }
