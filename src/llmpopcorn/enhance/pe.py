"""Prompt enhancement (PE): the paper's retrieval-augmented chain-of-thought prompt.

For a query (DESIGN §1.2, following the original ``generate_rag_prompt``):

1. embed the query; keep the ``num_tags`` categories that fit it best (by default
   by content: similarity to each category's centroid, categories under
   ``min_category_size`` videos skipped; ``category_match="name"`` is the paper's
   match on category names, see :mod:`llmpopcorn.corpus.categories`); when they hold fewer
   videos than references asked, the next categories top the pool up (recorded);
   with ``pool="reference"`` only the reference pool is used: the corpus part the
   study's judge never trained on, less every video whose normalised title occurs in
   the judge's part (:mod:`llmpopcorn.corpus.partition`);
2. sort those categories' videos by comment count; the bottom ``ratio`` are the
   unpopular pool, the rest the popular pool (ties in comment count are broken
   by a random order drawn from ``seed``, so no id range is favoured);
3. take the ``n_refs`` videos nearest to the query by content similarity, of
   which ``floor(n_refs * ratio)`` come from the unpopular pool (45 + 5 by default);
4. show them, popular first, inside the 7-step reasoning chain that ends with the
   basic mode's JSON answer.

The corpus is embedded once and cached (:mod:`llmpopcorn.corpus.index`), so a query
costs one query embedding and a few matrix-vector products. After generation,
:class:`CopyGuard` flags a title that copies a reference and re-asks once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from llmpopcorn.core.copycheck import COPY_THRESHOLD, CopyMatch, find_copy, normalise_title
from llmpopcorn.core.errors import ConfigError
from llmpopcorn.core.types import Idea, Message, Prompt, Reference
from llmpopcorn.corpus.partition import describe as describe_part
from llmpopcorn.enhance.prompts import field_values, render

if TYPE_CHECKING:  # pragma: no cover
    from llmpopcorn.core.settings import Settings
    from llmpopcorn.corpus.categories import CategoryChoice, CategoryResolver
    from llmpopcorn.corpus.index import CorpusIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PEParams:
    num_tags: int = 1
    ratio: float = 0.1
    n_refs: int = 50
    seed: int = 42
    #: how the query finds its categories (see :mod:`llmpopcorn.corpus.categories`)
    category_match: str = "centroid"
    min_category_size: int = 50
    #: the corpus part references come from (see :mod:`llmpopcorn.corpus.partition`)
    pool: str = "all"

    def __post_init__(self) -> None:
        if self.num_tags < 1:
            raise ConfigError(
                f"num_tags must be at least 1, got {self.num_tags}", "pass --tags 1 or more"
            )
        if not 0.0 <= self.ratio <= 1.0:
            raise ConfigError(
                f"ratio must be within [0, 1], got {self.ratio}", "pass e.g. --ratio 0.1"
            )
        if self.n_refs < 1:
            raise ConfigError(
                f"n_refs must be at least 1, got {self.n_refs}", "pass e.g. --refs 50"
            )
        if self.pool not in ("all", "reference"):
            raise ConfigError(
                f"unknown PE pool '{self.pool}'", "pass --pe-pool all or --pe-pool reference"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> PEParams:
        return cls(
            num_tags=settings.num_tags,
            ratio=settings.ratio,
            n_refs=settings.n_refs,
            seed=settings.seed,
            category_match=settings.category_match,
            min_category_size=settings.min_category_size,
            pool=settings.pe_pool,
        )

    @property
    def n_unpopular(self) -> int:
        return share(self.n_refs, self.ratio)

    @property
    def n_popular(self) -> int:
        return self.n_refs - self.n_unpopular


def share(n: int, ratio: float) -> int:
    """``floor(n * ratio)`` as the original code's ``int(n * ratio)``, without float
    artefacts (``0.29 * 100`` is 28.999...)."""
    return math.floor(n * ratio + 1e-9)


# -- selection ---------------------------------------------------------------------------


@dataclass
class Selection:
    """What PE chose for one query."""

    categories: list[dict[str, Any]]
    references: list[Reference]
    pools: dict[str, int]
    notes: list[str] = field(default_factory=list)
    #: categories added because the chosen ones held fewer videos than references asked
    topped_up: list[dict[str, Any]] = field(default_factory=list)
    matcher: dict[str, Any] = field(default_factory=dict)

    def summary(self, params: PEParams, embedder_id: str) -> dict[str, Any]:
        shown = {
            label: sum(r.label == label for r in self.references)
            for label in ("popular", "unpopular")
        }
        return {
            "embedder": embedder_id,
            "num_tags": params.num_tags,
            "ratio": params.ratio,
            "n_refs": params.n_refs,
            "seed": params.seed,
            "category_match": params.category_match,
            "min_category_size": params.min_category_size,
            "matcher": self.matcher,
            "categories": self.categories,
            "topped_up": self.topped_up,
            "pool": describe_part(params.pool),
            "pools": self.pools,
            "requested": {"popular": params.n_popular, "unpopular": params.n_unpopular},
            "shown": shown,
            "notes": self.notes,
        }


def category_resolver(index: CorpusIndex, *, method: str, min_size: int) -> CategoryResolver:
    """A resolver over the index's categories (the centroids are computed once per index)."""
    from llmpopcorn.corpus.categories import CategoryResolver, profile_from_index

    profile = getattr(index, "_category_profile", None)
    if profile is None:
        profile = index._category_profile = profile_from_index(index)
    return CategoryResolver(profile, index.embedder.embed, method=method, min_size=min_size)


def split_pools(
    rows: np.ndarray, comments: np.ndarray, ratio: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(popular, unpopular) rows: the bottom ``ratio`` by comment count are unpopular.

    ``comments`` are the comment counts of ``rows``. Equal counts are ordered by a
    random key drawn from ``seed``, so the cut through a run of ties is fair and
    reproducible."""
    tiebreak = np.random.default_rng(seed).random(len(rows))
    order = np.lexsort((tiebreak, -comments))  # most comments first
    n_unpopular = share(len(rows), ratio)
    cut = len(rows) - n_unpopular
    return rows[order[:cut]], rows[order[cut:]]


def pool_mask(index: CorpusIndex, pool: str) -> np.ndarray:
    """Which corpus rows PE may show from ``pool`` (:func:`~llmpopcorn.corpus.partition.
    in_pool`; cached per index and pool)."""
    cache = index.__dict__.setdefault("_pool_masks", {})
    if pool not in cache:
        from llmpopcorn.corpus.partition import in_pool

        cache[pool] = in_pool(index.corpus.frame, pool)
    return cache[pool]


def select_references(
    index: CorpusIndex,
    query_vec: np.ndarray,
    params: PEParams,
    resolver: CategoryResolver | None = None,
    ranking: list[CategoryChoice] | None = None,
) -> Selection:
    """PE's references for one query. ``ranking`` (the run's categories, best first,
    from the pipeline's one resolver) replaces this index's own resolver."""
    resolver = resolver or category_resolver(
        index, method=params.category_match, min_size=params.min_category_size
    )
    allowed = pool_mask(index, params.pool)
    if ranking:
        known = set(index.category_names)
        ranked = [
            type(c)(c.name, c.similarity, int(len(index.category_rows[c.name])))
            for c in ranking
            if c.name in known
        ]
    else:
        ranked = resolver.rank(query_vec)
    chosen, rest = ranked[: params.num_tags], ranked[params.num_tags :]

    def pool_rows(name: str) -> np.ndarray:
        rows = index.category_rows[name]
        return rows[allowed[rows]]

    categories = [{**c.as_dict(), "pool_videos": int(len(pool_rows(c.name)))} for c in chosen]
    rows = np.concatenate([pool_rows(c.name) for c in chosen])
    notes: list[str] = []
    topped_up: list[dict[str, Any]] = []
    for extra in rest:  # too few videos for the references asked: the next category tops up
        if len(rows) >= params.n_refs:
            break
        add = pool_rows(extra.name)
        if len(add):
            rows = np.concatenate([rows, add])
            topped_up.append({**extra.as_dict(), "pool_videos": int(len(add))})
    if topped_up:
        names = ", ".join(c["name"] for c in categories)
        added = ", ".join(f"{t['name']} ({t['pool_videos']})" for t in topped_up)
        notes.append(
            f"{names} holds fewer than the {params.n_refs} videos asked for in the "
            f"{params.pool} pool: topped up from {added}"
        )
    popular, unpopular = split_pools(rows, index.comments[rows], params.ratio, params.seed)
    if not np.any(query_vec):
        notes.append(
            f"the query has no vector in the {index.embedder.name} embedder's space "
            "(no known words): categories were chosen by size, references by pool order"
        )
    references: list[Reference] = []
    wanted = {"popular": params.n_popular, "unpopular": params.n_unpopular}
    results = index.index.search_pools(
        query_vec, [(popular, wanted["popular"]), (unpopular, wanted["unpopular"])]
    )
    for label, (found, sims) in zip(("popular", "unpopular"), results, strict=True):
        if len(found) < wanted[label]:
            names = ", ".join(c["name"] for c in categories + topped_up)
            notes.append(
                f"only {len(found)} {label} reference(s) available in {names} "
                f"({len(rows)} videos in the {params.pool} pool); {wanted[label]} requested"
            )
        references += [
            Reference(**index.row(int(i)), label=label, similarity=round(float(s), 4))
            for i, s in zip(found, sims, strict=True)
        ]
    pools = {
        "videos": int(len(rows)),
        "popular": int(len(popular)),
        "unpopular": int(len(unpopular)),
    }
    return Selection(
        categories=categories,
        references=references,
        pools=pools,
        notes=notes,
        topped_up=topped_up,
        matcher={**resolver.describe(), "source": "the run's resolver"}
        if ranking
        else resolver.describe(),
    )


# -- the prompt --------------------------------------------------------------------------


def _same_text(a: str, b: str) -> bool:
    # the exact copy (cover_desc == title in the shipped table) needs no normalising
    return a == b or normalise_title(a) == normalise_title(b)


def format_reference(ref: Reference, number: int) -> str:
    """One reference block; a field that is empty or a copy of the title is left out
    (in the shipped table the cover description is the title)."""
    cover = ref.cover_desc if ref.cover_desc and not _same_text(ref.cover_desc, ref.title) else ""
    caption = ref.caption if ref.caption and not _same_text(ref.caption, ref.title) else ""
    if caption and cover and _same_text(caption, cover):
        caption = ""
    return render(
        "pe_reference.txt",
        heading=f"{ref.label.capitalize()} reference video {number}:",
        title=ref.title,
        cover=f"\nCover description: {cover}" if cover else "",
        caption=f"\nDescription: {caption}" if caption else "",
        comments=str(ref.comment_count),
    )


def format_references(references: list[Reference]) -> str:
    blocks = []
    for label, heading in (
        ("popular", "Popular videos (many comments):"),
        ("unpopular", "Unpopular videos (few comments):"),
    ):
        group = [r for r in references if r.label == label]
        if group:
            blocks.append(heading)
            blocks += [format_reference(r, i) for i, r in enumerate(group, 1)]
    return "\n\n".join(blocks) if blocks else "(no reference videos are available)"


def _category_phrase(names: list[str]) -> str:
    quoted = [f'"{n}"' for n in names]
    if len(quoted) == 1:
        return f"the {quoted[0]} category"
    return f"the {', '.join(quoted[:-1])} and {quoted[-1]} categories"


def pe_messages(
    query: str,
    references: list[Reference],
    categories: list[str],
    *,
    example: bool = True,
    post_text: bool = True,
) -> list[Message]:
    """PE's messages (``example``: with the format example, see
    :func:`~llmpopcorn.enhance.prompts.example_block`; ``post_text``: the post's fields
    asked for besides the paper's three)."""
    user = render(
        "pe_user.txt",
        query=query,
        categories=_category_phrase(categories),
        references=format_references(references),
        **field_values(example=example, post_text=post_text),
    )
    return [
        Message(role="system", content=render("pe_system.txt")),
        Message(role="user", content=user),
    ]


class PEPromptBuilder:
    """PE mode: retrieval over the cached corpus index, then the chain-of-thought prompt."""

    mode = "pe"

    def __init__(self, index: CorpusIndex, params: PEParams | None = None):
        self.index = index
        self.params = params or PEParams()

    @classmethod
    def from_settings(cls, settings: Settings) -> PEPromptBuilder:
        from llmpopcorn.core.cache import default_cache_dir
        from llmpopcorn.corpus.index import CorpusIndex, get_embedder
        from llmpopcorn.corpus.table import load_corpus

        params = PEParams.from_settings(settings)  # validate before the expensive part
        corpus = load_corpus(settings.data_dir)
        embedder = get_embedder(settings.embedder, settings)
        index = CorpusIndex.open(corpus, embedder, default_cache_dir(settings))
        return cls(index, params)

    #: the pipeline may hand over the run's category ranking (one resolver per run)
    accepts_categories = True

    @property
    def corpus(self):
        """The corpus the references come from (the stand-in's hashtags come from it too)."""
        return self.index.corpus

    def select(self, query: str, categories: list[CategoryChoice] | None = None) -> Selection:
        return select_references(
            self.index, self.index.embed_query(query), self.params, ranking=categories
        )

    def build(self, query: str, categories: list[CategoryChoice] | None = None) -> Prompt:
        selection = self.select(query, categories)
        for note in selection.notes:
            log.warning("PE: %s", note)
        names = [c["name"] for c in selection.categories]
        return Prompt(
            mode="pe",
            query=query,
            messages=pe_messages(query, selection.references, names),
            references=selection.references,
            settings=selection.summary(self.params, self.index.embedder.id),
        )

    def copy_guard(self, prompt: Prompt) -> CopyGuard:
        return CopyGuard(prompt.references)


# -- the copy guard ------------------------------------------------------------------


class CopyGuard:
    """The copy check: rejects a copied title at most ``max_reasks`` times (the reason
    is fed back to the LLM) and reports what it found for the run record."""

    def __init__(
        self, references: list[Reference], threshold: float = COPY_THRESHOLD, max_reasks: int = 1
    ):
        self.references = references
        self.threshold = threshold
        self.max_reasks = max_reasks
        self.flagged: list[CopyMatch] = []

    def __call__(self, idea: Idea) -> str | None:
        match = find_copy(idea.title, self.references, self.threshold)
        if match is None or len(self.flagged) >= self.max_reasks:
            return None
        self.flagged.append(match)
        return (
            f'the title "{idea.title}" copies the title of reference video {match.video_id} '
            f'("{match.title}", similarity {match.similarity:.2f}); copying a reference is '
            "forbidden: write an original title (and content) for the request"
        )

    def report(self, idea: Idea) -> dict[str, Any]:
        final = find_copy(idea.title, self.references, self.threshold)
        if final is None:
            status = "original after a re-ask" if self.flagged else "original"
        else:
            status = "copy (kept: no re-ask left)"
        return {
            "status": status,
            "copied": final is not None,
            "match": final.as_dict() if final else None,
            "reasked": len(self.flagged),
            "flagged": [m.as_dict() for m in self.flagged],
            "threshold": self.threshold,
            "references_checked": len(self.references),
        }
