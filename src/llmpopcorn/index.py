"""Cached corpus embeddings and the retrieval index over them.

The corpus is embedded once per (corpus content hash, embedder id, text recipe):
the vectors go to ``<cache>/embeddings/<key>.items.npy`` (with the category-name
vectors and, for lexical embedders, the learnt vocabulary beside it) and a
``<key>.json`` manifest written last, so a crash never leaves a half entry that
looks whole. Every file is written to a temporary name and renamed. A later run
loads the matrix memory-mapped after checking the manifest (same key parts,
shapes, sizes and SHA-256 of every file); anything that does not match is
logged as corrupt or stale and rebuilt.

Search goes through :class:`VectorIndex`. :class:`ExactIndex` is a NumPy
matrix-vector product, exact and fast at MicroLens size (16,740 x 384 floats:
about 2 ms per query). An approximate index (faiss, hnswlib) for millions of
rows implements the same ``search`` with ``rows`` as its filter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .corpus import Corpus, file_sha256

if TYPE_CHECKING:  # pragma: no cover
    from .backends.base import Embedder
    from .settings import Settings

log = logging.getLogger(__name__)

#: bump when the cache layout changes: older entries are then never read
CACHE_FORMAT = 1
#: how a video becomes text (corpus.item_text): part of the cache key
TEXT_RECIPE = "title+cover_desc+caption_en,skip-copies,join='. ',v1"
EMBED_BATCH = 512  # texts per embedder call while building (the embedder batches inside)


def default_cache_dir(settings: Settings | None = None) -> Path:
    """``settings.cache_dir``, else ``$XDG_CACHE_HOME/llmpopcorn``, else ``~/.cache/llmpopcorn``."""
    if settings is not None and settings.cache_dir:
        return Path(settings.cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "llmpopcorn"


@contextmanager
def file_lock(path: str | Path, what: str = "the embedding cache") -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created when missing) for the block, so that
    a second process building the same thing waits and then reuses the first one's
    work. The lock dies with its process (``flock``), so a crash never leaves a stale
    lock. Yields False, unlocked, where no lock file can be made (read-only or full
    disk, no ``fcntl``): the work then simply runs without one."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield False
        return
    try:
        handle = open(path, "a+b")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        log.debug("no lock file %s (%s): building without one", path, exc)
        yield False
        return
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is building %s: waiting for it (%s)", what, path)
            started = time.perf_counter()
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            log.warning("waited %.1f s for the other build", time.perf_counter() - started)
        yield True
    finally:
        handle.close()


# -- search ------------------------------------------------------------------------------


class VectorIndex(ABC):
    """Nearest rows of a matrix of L2-normalised vectors by cosine similarity."""

    @abstractmethod
    def search(
        self, query: np.ndarray, k: int, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows (restricted to ``rows`` when given), best first, and
        their similarities. Equal similarities are ordered by row number."""

    def search_pools(
        self, query: np.ndarray, requests: list[tuple[np.ndarray, int]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search` for several (rows, k) requests with one query."""
        return [self.search(query, k, rows=rows) for rows, k in requests]


class ExactIndex(VectorIndex):
    """Exact search: one matrix-vector product over the candidate rows."""

    def __init__(self, vectors: np.ndarray):
        # a plain ndarray view of a memory map: same pages, none of np.memmap's
        # per-operation subclass overhead (milliseconds per product)
        self.vectors = np.asarray(vectors)

    def search(self, query, k, rows=None):
        if rows is None:
            rows = np.arange(len(self.vectors))
        return self.search_pools(query, [(rows, k)])[0]

    def search_pools(self, query, requests):
        # one product over the union of the pools instead of one per pool
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        every = np.concatenate([np.asarray(rows, dtype=np.int64) for rows, _ in requests])
        scores = (
            (self.vectors @ query)[every]
            if 4 * len(every) > len(self.vectors)
            else self.vectors[every] @ query
        )
        out, start = [], 0
        for rows, k in requests:
            part = slice(start, start + len(rows))
            start += len(rows)
            k = min(int(k), len(rows))
            if k <= 0:
                out.append((every[:0], np.zeros(0, dtype=np.float32)))
            else:
                out.append(top_k(every[part], scores[part], k))
        return out


def top_k(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` highest scores, ties broken by row number (canonical, whatever the
    order of ``rows``)."""
    if k < len(scores):
        # every row scoring at least the k-th best, then an exact ordered cut
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = np.flatnonzero(scores >= kth)
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))[:k]
    return rows[order], scores[order]


# -- cache -------------------------------------------------------------------------------


@dataclass
class CacheEntry:
    items: np.ndarray  # (n, d) float32, memory-mapped when loaded from disk
    categories: np.ndarray  # (c, d) float32
    category_names: list[str]
    state: dict[str, np.ndarray] = field(default_factory=dict)
    key: str = ""
    hit: bool = False
    seconds: float = 0.0


def cache_key(corpus_sha256: str, embedder_id: str, recipe: str = TEXT_RECIPE) -> str:
    text = json.dumps([CACHE_FORMAT, corpus_sha256, embedder_id, recipe])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _atomic_write(path: Path, write) -> None:
    """Call ``write(file object)`` on a temporary file beside ``path``, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EmbeddingCache:
    """On-disk cache of corpus embeddings under ``<root>/embeddings``."""

    def __init__(self, root: str | Path):
        self.dir = Path(root).expanduser() / "embeddings"

    def paths(self, key: str) -> dict[str, Path]:
        return {
            "manifest": self.dir / f"{key}.json",
            "items": self.dir / f"{key}.items.npy",
            "categories": self.dir / f"{key}.categories.npy",
            "state": self.dir / f"{key}.state.npz",
        }

    def load(self, key: str, expect: dict[str, Any]) -> CacheEntry | None:
        """The entry for ``key`` if it is whole and matches ``expect``; else None
        (a missing entry silently, a corrupt or stale one with a warning)."""
        paths = self.paths(key)
        if not paths["manifest"].exists():
            return None
        try:
            entry = self._read(key, paths, expect)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("embedding cache %s is corrupt or stale (%s): rebuilding it", key, exc)
            return None
        return entry

    def _read(self, key: str, paths: dict[str, Path], expect: dict[str, Any]) -> CacheEntry:
        manifest = json.loads(paths["manifest"].read_text("utf-8"))
        for name, value in expect.items():
            if manifest.get(name) != value:
                raise ValueError(f"{name} is {manifest.get(name)!r}, expected {value!r}")
        for name, info in manifest["files"].items():
            path = paths[name]
            if path.stat().st_size != info["bytes"]:
                raise ValueError(
                    f"{path.name} has {path.stat().st_size} bytes, expected {info['bytes']}"
                )
            if file_sha256(path) != info["sha256"]:
                raise ValueError(f"{path.name} does not match its checksum")
        items = np.load(paths["items"], mmap_mode="r", allow_pickle=False)
        categories = np.load(paths["categories"], allow_pickle=False)
        shape = tuple(manifest["items_shape"])
        if items.shape != shape or items.dtype != np.float32:
            raise ValueError(f"items are {items.shape} {items.dtype}, expected {shape} float32")
        if categories.shape != (len(manifest["category_names"]), shape[1]):
            raise ValueError(f"category vectors are {categories.shape}")
        state: dict[str, np.ndarray] = {}
        if "state" in manifest["files"]:
            with np.load(paths["state"], allow_pickle=False) as npz:
                state = {k: npz[k] for k in npz.files}
        return CacheEntry(
            items=items,
            categories=categories.astype(np.float32, copy=False),
            category_names=list(manifest["category_names"]),
            state=state,
            key=key,
            hit=True,
        )

    def save(self, key: str, entry: CacheEntry, expect: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        paths = self.paths(key)
        files: dict[str, dict[str, Any]] = {}
        writes: list[tuple[str, Any]] = [
            ("items", lambda fh: np.save(fh, np.ascontiguousarray(entry.items, dtype=np.float32))),
            (
                "categories",
                lambda fh: np.save(fh, np.ascontiguousarray(entry.categories, dtype=np.float32)),
            ),
        ]
        if entry.state:
            writes.append(("state", lambda fh: np.savez(fh, **entry.state)))
        for name, write in writes:
            _atomic_write(paths[name], write)
            files[name] = {"bytes": paths[name].stat().st_size, "sha256": file_sha256(paths[name])}
        manifest = {
            **expect,
            "items_shape": list(entry.items.shape),
            "category_names": entry.category_names,
            "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(entry.seconds, 3),
        }
        # the manifest goes last: it is what makes the entry visible
        _atomic_write(
            paths["manifest"], lambda fh: fh.write(json.dumps(manifest, indent=2).encode())
        )


# -- the corpus index --------------------------------------------------------------------


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
        index: type[VectorIndex] = ExactIndex,
    ) -> CorpusIndex:
        """Load the corpus embeddings from the cache, building them on a miss."""
        entry = load_or_build(corpus, embedder, cache_dir, use_cache=use_cache)
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
    from .registry import registry

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
) -> CacheEntry:
    """The cache entry for (corpus, embedder, text recipe): loaded when whole and
    current, else built (and saved when ``use_cache``). A lexical embedder gets the
    vocabulary it learnt back from the entry."""
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
    entry = cache.load(key, expect) if cache else None
    if entry is not None and entry.category_names != corpus.categories:
        log.warning("embedding cache %s lists other categories: rebuilding it", key)
        entry = None
    if entry is not None:
        embedder.load_state(entry.state)
    else:
        entry = build_entry(corpus, embedder)
        entry.key = key
        if cache:
            cache.save(key, entry, expect)
    entry.seconds = time.perf_counter() - started
    log.info(
        "corpus embeddings %s: %d rows x %d dims (%s, %.2f s)",
        key[:12],
        *entry.items.shape,
        "cache hit" if entry.hit else "built",
        entry.seconds,
    )
    return entry


def build_entry(corpus: Corpus, embedder: Embedder) -> CacheEntry:
    """Fit the embedder (when it learns from the corpus) and embed every video and
    category name once, in batches."""
    started = time.perf_counter()
    texts = corpus.texts
    names = corpus.categories
    # a warning so that the CLI shows why the first PE run takes a while
    log.warning(
        "embedding %d corpus texts with %s (once: later runs read them from the cache)",
        len(texts),
        embedder.id,
    )
    embedder.fit([*texts, *names])
    parts = []
    for start in range(0, len(texts), EMBED_BATCH):
        parts.append(embedder.embed(texts[start : start + EMBED_BATCH]))
        log.debug("embedded %d/%d corpus texts", min(start + EMBED_BATCH, len(texts)), len(texts))
    items = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    categories = np.ascontiguousarray(embedder.embed(names), dtype=np.float32)
    seconds = time.perf_counter() - started
    log.info("embedded %d corpus texts with %s in %.1f s", len(texts), embedder.id, seconds)
    return CacheEntry(
        items=items,
        categories=categories,
        category_names=list(names),
        state=embedder.state(),
        seconds=seconds,
    )
