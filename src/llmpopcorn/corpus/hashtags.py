"""The hashtags that popular videos of each category actually use.

A post needs hashtags its community searches for, not the words of its own title. This
module counts, per category, the hashtags in the titles of the category's more-commented
half, keeps those that at least ``min_videos`` different videos use (a statistic, never one
video's text), and ranks them by the log comment counts of the videos using them.

MicroLens titles are machine-translated, so a hashtag often holds spaces
(``# summer strike``): a tag runs from ``#`` to the next ``#`` or punctuation mark, at most
four words, joined in CamelCase (``#SummerStrike``).

The table reaches the offline stand-in through ``ChatRequest.context`` (backends cannot
import the corpus). Without a data folder the table shipped with the package
(``category_hashtags.json``, made by :func:`write_table` from the MicroLens table; tags
only, no rows) is used; in PE mode the table is computed from the corpus PE loaded.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from functools import cache
from importlib import resources
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


def write_table(corpus: Corpus, path: Path) -> dict[str, Any]:
    """Write the table with what it was made from (the corpus' SHA-256, the recipe)."""
    doc = {
        "recipe": RECIPE,
        "made_from": {"corpus_sha256": corpus.sha256, "rows": len(corpus)},
        "rule": "hashtags used by at least 3 videos of the category's more-commented half",
        "categories": category_hashtags(corpus),
    }
    Path(path).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", "utf-8")
    return doc


@cache
def shipped_table() -> dict[str, list[str]]:
    """The table shipped with the package (made from the MicroLens table)."""
    text = resources.files(__package__).joinpath(SHIPPED).read_text(encoding="utf-8")
    return json.loads(text)["categories"]


_computed: dict[str, dict[str, list[str]]] = {}


def hashtags_for(category: str | None, corpus: Corpus | None = None) -> dict[str, Any]:
    """What the stand-in gets for a run's category: ``{"category", "hashtags", "source"}``,
    from ``corpus`` (PE's loaded table) when given, else from the shipped table."""
    if not category:
        return {"category": None, "hashtags": [], "source": None}
    table, source = shipped_table(), "the table shipped with llmpopcorn (MicroLens)"
    if corpus is not None:
        key = corpus.sha256 or str(id(corpus))
        if key not in _computed:
            _computed.clear()  # one corpus at a time is enough
            _computed[key] = category_hashtags(corpus)
        table, source = _computed[key], "the configured corpus"
    return {"category": category, "hashtags": list(table.get(category, [])), "source": source}
