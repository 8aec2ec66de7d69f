"""One category resolver for PE, the scorer, the report and the study.

A query (or an idea's title) goes in; the corpus categories come out ranked by how
well they fit it. Two matchers:

* ``centroid`` (default): cosine similarity between the text's embedding and each
  category's *centroid*, the normalised mean embedding of its videos. It matches on
  content: "a street food vendor flips a giant omelette" lands in Delicacy.
* ``name``: the paper's matcher, similarity to the embedded category *name*. Kept for
  the faithful study; it favours tiny categories whose name happens to be close
  (KPOP for the omelette).

Categories with fewer than ``min_size`` videos are never chosen (a category of two
videos cannot supply 50 references); when every category is that small the
minimum is ignored. Equal similarities (a text the embedder cannot represent) prefer the
larger category, then the name, so the order is deterministic.

The same centroids can be built from the PE corpus index (all videos) or from a
predictor's retrieval memory (its training videos, no corpus needed), so ``popcorn
score`` without data resolves categories the same way as PE does with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmpopcorn.core.errors import ConfigError

METHODS = ("centroid", "name")
DEFAULT_MIN_SIZE = 50


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


@dataclass
class CategoryProfile:
    """What the matchers compare a text with: one row per category."""

    names: list[str]
    sizes: np.ndarray  # videos per category (in the source corpus)
    centroids: np.ndarray  # (c, d), L2-normalised mean embedding of the members
    name_vectors: np.ndarray | None = None  # (c, d) embedded category names
    source: str = ""

    @classmethod
    def from_members(
        cls,
        names: Sequence[str],
        member_category: np.ndarray,
        vectors: np.ndarray,
        *,
        name_vectors: np.ndarray | None = None,
        sizes: np.ndarray | None = None,
        source: str = "",
        chunk: int = 8192,
    ) -> CategoryProfile:
        """Centroids from per-video vectors; ``member_category[i]`` indexes ``names``.

        Sums are taken in float64 chunk by chunk, so a memory-mapped or fp16 matrix is
        never copied whole."""
        names = list(names)
        member_category = np.asarray(member_category, dtype=np.int64)
        sums = np.zeros((len(names), vectors.shape[1]), dtype=np.float64)
        for start in range(0, len(member_category), chunk):
            part = _normalise(np.asarray(vectors[start : start + chunk], dtype=np.float32))
            cats = member_category[start : start + chunk]
            # sorted segment sums (np.add.at's scatter is ~10x slower)
            order = np.argsort(cats, kind="stable")
            present = np.flatnonzero(np.bincount(cats, minlength=len(names)))
            starts = np.searchsorted(cats[order], present)
            sums[present] += np.add.reduceat(part[order], starts, axis=0)
        counts = np.bincount(member_category, minlength=len(names))
        return cls(
            names=names,
            sizes=np.asarray(counts if sizes is None else sizes, dtype=np.int64),
            centroids=_normalise(sums),
            name_vectors=None if name_vectors is None else _normalise(name_vectors),
            source=source,
        )


@dataclass(frozen=True)
class CategoryChoice:
    name: str
    similarity: float
    videos: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "similarity": self.similarity, "videos": self.videos}


class CategoryResolver:
    """Ranks a profile's categories for a text (or a vector in the same space)."""

    def __init__(
        self,
        profile: CategoryProfile,
        embed: Callable[[list[str]], np.ndarray] | None = None,
        *,
        method: str = "centroid",
        min_size: int = DEFAULT_MIN_SIZE,
    ):
        if method not in METHODS:
            raise ConfigError(
                f"unknown category matcher '{method}'", f"use one of: {', '.join(METHODS)}"
            )
        if method == "name" and profile.name_vectors is None:
            raise ConfigError(
                "the name matcher needs embedded category names",
                "use --category-match centroid, or build the profile with name vectors",
            )
        self.profile = profile
        self.embed = embed
        self.method = method
        self.min_size = int(min_size)

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "min_size": self.min_size, "source": self.profile.source}

    def vector(self, text: str) -> np.ndarray:
        if self.embed is None:
            raise ConfigError("this category resolver has no embedder", "pass a vector instead")
        return np.asarray(self.embed([text]), dtype=np.float32)[0]

    def similarities(self, query_vec: np.ndarray) -> np.ndarray:
        table = self.profile.centroids if self.method == "centroid" else self.profile.name_vectors
        return table @ _normalise(np.asarray(query_vec, dtype=np.float32).reshape(-1))

    def rank(self, query: str | np.ndarray, *, eligible_only: bool = True) -> list[CategoryChoice]:
        """Categories best first. With ``eligible_only`` the ones under ``min_size`` are
        left out (unless none reaches it: then the minimum is ignored)."""
        vec = self.vector(query) if isinstance(query, str) else query
        sims = self.similarities(vec)
        sizes = self.profile.sizes
        names = self.profile.names
        big = sizes >= self.min_size
        if not big.any():  # every category is small (a tiny corpus): ignore the minimum
            big[:] = True
        # most similar first; ties: larger, then by name
        order = sorted(
            range(len(names)), key=lambda i: (-round(float(sims[i]), 6), -sizes[i], names[i])
        )
        return [
            CategoryChoice(names[i], round(float(sims[i]), 4), int(sizes[i]))
            for i in order
            if big[i] or not eligible_only
        ]

    def resolve(self, query: str | np.ndarray, k: int = 1) -> list[CategoryChoice]:
        return self.rank(query)[: max(int(k), 1)]

    def best(self, query: str | np.ndarray) -> str:
        return self.resolve(query, 1)[0].name


def profile_from_index(index: Any) -> CategoryProfile:
    """The profile of a PE :class:`~llmpopcorn.corpus.index.CorpusIndex` (every corpus video)."""
    names = list(index.category_names)
    member = np.empty(len(index.comments), dtype=np.int64)
    for i, name in enumerate(names):
        member[index.category_rows[name]] = i
    return CategoryProfile.from_members(
        names,
        member,
        index.entry.items,
        name_vectors=index.category_vectors,
        source=f"corpus index ({index.embedder.id})",
    )
