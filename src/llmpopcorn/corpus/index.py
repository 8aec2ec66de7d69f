"""A corpus with its cached embeddings, per-category rows and a vector index.

:func:`load_or_build` reads the cache entry (:mod:`.embcache`) or builds it
(:mod:`.build`) under a file lock; :class:`CorpusIndex` holds it with a
:class:`~.vectors.VectorIndex` (:mod:`.vectors`) for search.
"""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmpopcorn.core.cache import default_cache_dir, file_lock
from llmpopcorn.corpus import build as _build
from llmpopcorn.corpus.embcache import (
    CACHE_FORMAT,
    TEXT_RECIPE,
    CacheEntry,
    ChunkStore,
    EmbeddingCache,
    cache_key,
)
from llmpopcorn.corpus.table import Corpus
from llmpopcorn.corpus.vectors import ExactIndex, VectorIndex, make_index

if TYPE_CHECKING:  # pragma: no cover
    from llmpopcorn.backends.base import Embedder
    from llmpopcorn.core.settings import Settings

log = logging.getLogger(__name__)


class CorpusIndex:
    """A corpus with its cached embeddings, per-category row lists and a vector index."""

    def __init__(
        self,
        corpus: Corpus,
        embedder: Embedder,
        entry: CacheEntry,
        index: VectorIndex | None = None,
    ):
        self.corpus = corpus
        self.embedder = embedder
        self.entry = entry
        self.index = index or ExactIndex(entry.items)
        frame = corpus.frame
        self.category_names = entry.category_names
        self.category_vectors = entry.categories
        self.comments = frame["comment_count"].to_numpy(dtype=np.int64)
        codes = {name: i for i, name in enumerate(self.category_names)}
        category_of_row = frame["partition"].map(codes).to_numpy()
        self.category_rows = {
            name: np.flatnonzero(category_of_row == i) for i, name in enumerate(self.category_names)
        }
        self._columns = {
            c: frame[c].tolist()
            for c in ("video_id", "title_en", "cover_desc", "caption_en", "partition")
        }

    @classmethod
    def open(
        cls,
        corpus: Corpus,
        embedder: Embedder,
        cache_dir: str | Path | None = None,
        *,
        use_cache: bool = True,
        index: Any = make_index,
    ) -> CorpusIndex:
        """Load the corpus embeddings from the cache, building them on a miss; search
        is exact at corpus sizes like MicroLens, approximate above
        :data:`APPROX_MIN_ROWS` rows (see :func:`make_index`)."""
        entry = load_or_build(corpus, embedder, cache_dir, use_cache=use_cache)
        if index is make_index:
            # the trained approximate index is kept beside the embeddings it indexes
            root = EmbeddingCache(cache_dir or default_cache_dir()).dir
            saved = use_cache and (root / f"{entry.key}.json").exists()
            path = root / f"{entry.key}.ivf.faiss" if saved else None
            return cls(corpus, embedder, entry, make_index(entry.items, path=path))
        return cls(corpus, embedder, entry, index(entry.items))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embedder.embed([text])[0]

    def row(self, i: int) -> dict[str, Any]:
        cols = self._columns
        return {
            "video_id": cols["video_id"][i],
            "title": cols["title_en"][i],
            "cover_desc": cols["cover_desc"][i],
            "caption": cols["caption_en"][i],
            "category": cols["partition"][i],
            "comment_count": int(self.comments[i]),
        }


def get_embedder(name: str, settings: Settings | None = None) -> Embedder:
    """The registered embedder ``name``, configured from ``settings`` when given."""
    from llmpopcorn.core.registry import registry

    cls = registry.get("embedder", name)
    return cls.from_settings(settings) if settings is not None else cls()


def corpus_embeddings(
    corpus: Corpus, embedder: Embedder, cache_dir: str | Path | None = None
) -> np.ndarray:
    """(n, d) float32 L2-normalised embeddings of every corpus row (``corpus.texts``),
    row-aligned with ``corpus.frame``; built once and then read from the on-disk
    cache (``cache_dir``, default :func:`default_cache_dir`), memory-mapped."""
    return load_or_build(corpus, embedder, cache_dir).items


def load_or_build(
    corpus: Corpus,
    embedder: Embedder,
    cache_dir: str | Path | None = None,
    *,
    use_cache: bool = True,
    progress: bool | None = None,
    reuse_memory: bool = True,
) -> CacheEntry:
    """The cache entry for (corpus, embedder, text recipe): loaded when whole and
    current, else built (and saved when ``use_cache``). A lexical embedder gets the
    vocabulary it learnt back from the entry.

    A build holds ``<key>.lock``, so a second process building the same entry waits
    and then loads the first one's result. It writes its vectors in chunks of
    :data:`CHUNK_ROWS` rows as it goes (``<key>.chunks/``), so an interrupted build
    resumes where it stopped; ``progress`` shows a bar on stderr (default: when
    stderr is a terminal, else a line every few seconds). Rows whose vectors the
    shipped predictor already carries (``reuse_memory``, checked numerically) are
    not embedded again. A cache that cannot be written (disk full, read-only) is
    reported with a warning and the run goes on uncached."""
    started = time.perf_counter()
    if not corpus.sha256:
        # a corpus built in memory: hash its content so the key still tracks it
        corpus.sha256 = hashlib.sha256(corpus.frame.to_csv(index=False).encode("utf-8")).hexdigest()
    expect = {
        "format": CACHE_FORMAT,
        "corpus_sha256": corpus.sha256,
        "embedder": embedder.id,
        "recipe": TEXT_RECIPE,
        "rows": len(corpus),
    }
    key = cache_key(corpus.sha256, embedder.id)
    cache = EmbeddingCache(cache_dir or default_cache_dir()) if use_cache else None
    entry = _load_current(cache, key, expect, corpus)
    if entry is None and cache is not None:
        if not cache.writable():
            cache = None
    if entry is None:
        lock = file_lock(cache.paths(key)["lock"]) if cache else nullcontext(False)
        with lock:
            # another process may have built it while this one waited for the lock
            entry = _load_current(cache, key, expect, corpus) if cache else None
            if entry is None:
                chunks = ChunkStore(cache.paths(key)["chunks"]) if cache else None
                entry = _build.build_entry(
                    corpus, embedder, chunks=chunks, progress=progress, reuse_memory=reuse_memory
                )
                entry.key = key
                if cache and cache.save_or_warn(key, entry, expect) and chunks:
                    chunks.remove()
    if entry.hit:
        embedder.load_state(entry.state)
    entry.seconds = time.perf_counter() - started
    log.info(
        "corpus embeddings %s: %d rows x %d dims (%s, %.2f s)",
        key[:12],
        *entry.items.shape,
        "cache hit" if entry.hit else "built",
        entry.seconds,
    )
    return entry


def _load_current(
    cache: EmbeddingCache | None, key: str, expect: dict[str, Any], corpus: Corpus
) -> CacheEntry | None:
    entry = cache.load(key, expect) if cache else None
    if entry is not None and entry.category_names != corpus.categories:
        log.warning("embedding cache %s lists other categories: rebuilding it", key)
        return None
    return entry
