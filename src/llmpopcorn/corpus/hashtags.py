"""The hashtags that popular videos of each category actually use.

A post needs hashtags its community searches for, not the words of its own title. This
module counts, per category, the hashtags in the titles of the category's more-commented
half, keeps those that at least ``min_videos`` different videos use (a statistic, never one
video's text), and ranks them by the log comment counts of the videos using them.

MicroLens titles are machine-translated, so a hashtag often holds spaces
(``# summer strike``): a tag runs from ``#`` to the next ``#`` or punctuation mark, at most
four words, joined in CamelCase (``#SummerStrike``).

The table reaches the offline stand-in through ``ChatRequest.context`` (backends cannot
import the corpus). It is computed from the corpus the run reads (PE's, or the data folder's
in basic mode) and never shipped: MicroLens' terms forbid redistributing its text, tags
included. Without a data folder a run has no corpus hashtags (the stand-in uses the query's
topics and the category's name, and says so).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path
from typing import Any

from llmpopcorn.corpus.table import Corpus

SHIPPED = "category_hashtags.json"
RECIPE = "hashtags-v1"
MAX_WORDS = 4
MAX_CHARS = 30
_WORD = re.compile(r"[A-Za-z0-9]+")
_STOP_AT = re.compile(r"[^\w\s']")  # a tag ends at punctuation, an emoji or a symbol


def title_hashtags(title: str) -> list[str]:
    """The hashtags of one title in CamelCase, ASCII only (``"# summer strike!"`` ->
    ``["#SummerStrike"]``); long phrases and tags without a letter are dropped."""
    tags = []
    for segment in title.split("#")[1:]:
        words = _WORD.findall(_STOP_AT.split(segment, maxsplit=1)[0])
        if not words or len(words) > MAX_WORDS:
            continue
        tag = "".join(w[:1].upper() + w[1:] for w in words)
        if 2 <= len(tag) <= MAX_CHARS and any(c.isalpha() for c in tag):
            tags.append("#" + tag)
    return tags


def category_hashtags(
    corpus: Corpus, *, top: float = 0.5, min_videos: int = 3, per_category: int = 8
) -> dict[str, list[str]]:
    """Per category, up to ``per_category`` hashtags that at least ``min_videos`` videos of
    its most-commented ``top`` share use, best first (by the sum of log2(2 + comments))."""
    frame = corpus.frame
    table: dict[str, list[str]] = {}
    for category, group in frame.groupby("partition", sort=True):
        counts = group["comment_count"].astype(float)
        popular = group[counts >= counts.quantile(1.0 - top)]
        weight: Counter[str] = Counter()
        videos: dict[str, set[str]] = defaultdict(set)
        spelling: dict[str, Counter[str]] = defaultdict(Counter)
        for video, title, comments in zip(
            popular["video_id"], popular["title_en"], popular["comment_count"], strict=True
        ):
            for tag in set(title_hashtags(str(title))):
                key = tag.lower()
                if video not in videos[key]:
                    videos[key].add(video)
                    weight[key] += math.log2(2 + float(comments))
                spelling[key][tag] += 1
        ranked = sorted(
            (k for k in weight if len(videos[k]) >= min_videos),
            key=lambda k: (-weight[k], k),
        )
        tags = [spelling[k].most_common(1)[0][0] for k in ranked[:per_category]]
        if tags:
            table[str(category)] = tags
    return table


_computed: dict[str, dict[str, list[str]]] = {}


def hashtags_for(category: str | None, corpus: Corpus | None = None) -> dict[str, Any]:
    """What the stand-in gets for a run's category: ``{"category", "hashtags", "source"}``,
    from ``corpus`` (the table the run reads); no hashtags without one."""
    if not category:
        return {"category": None, "hashtags": [], "source": None}
    if corpus is None:
        return {"category": category, "hashtags": [], "source": None}
    key = corpus.sha256 or str(id(corpus))
    if key not in _computed:
        _computed.clear()  # one corpus at a time is enough
        _computed[key] = category_hashtags(corpus)
    tags = list(_computed[key].get(category, []))
    return {"category": category, "hashtags": tags, "source": "the configured corpus"}


@cache
def _corpus_at(path: str) -> Corpus:
    from llmpopcorn.corpus.table import load_corpus

    return load_corpus(path)


def corpus_for_tags(data_dir: str | Path | None) -> Corpus | None:
    """The corpus of a data folder, loaded once per process (None without one, or when it
    cannot be read: hashtags are a nicety, never a reason for a run to fail)."""
    if data_dir is None:
        return None
    from llmpopcorn.core.errors import PopcornError

    try:
        return _corpus_at(str(Path(data_dir).expanduser().resolve()))
    except (PopcornError, OSError):
        return None
