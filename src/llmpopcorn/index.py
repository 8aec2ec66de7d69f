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
about 2 ms per query). :class:`IVFIndex` (faiss, the ``[ann]`` extra) is the
approximate index for millions of rows, with the same ``search`` and ``rows`` as
its filter; :func:`make_index` picks it above :data:`APPROX_MIN_ROWS` rows.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
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
    """``settings.cache_dir``, else ``$POPCORN_CACHE_DIR`` (what settings would read, for
    callers without settings such as the scorer's embedder), else
    ``$XDG_CACHE_HOME/llmpopcorn``, else ``~/.cache/llmpopcorn``."""
    if settings is not None and settings.cache_dir:
        return Path(settings.cache_dir).expanduser()
    if settings is None and os.environ.get("POPCORN_CACHE_DIR"):
        return Path(os.environ["POPCORN_CACHE_DIR"]).expanduser()
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


#: below this many rows exact search is used even when faiss is installed. Measured
#: by benchmarks/bench_speed.py (2 cores, 384-d float32): an exact product over every
#: row costs about 1 ms per 10,000 rows (16,740: 2 ms; 1,000,000: 100-200 ms), an IVF
#: probe a few ms whatever the size; the IVF build costs seconds to a minute
APPROX_MIN_ROWS = 200_000
#: a pool (category filter) this small is searched exactly even in an approximate
#: index: gathering its rows costs less than an IVF probe, and it is exact
EXACT_POOL_MAX = 50_000


class IVFIndex(VectorIndex):
    """Approximate search with faiss: an inverted file of ``nlist`` k-means cells
    (inner product on the normalised vectors); a query scans the ``nprobe`` nearest
    cells. Candidates are re-scored exactly from ``vectors`` (a memory map is fine), so
    returned similarities are exact and ties are ordered as in :class:`ExactIndex`;
    small pools are searched exactly. recall@50 against exact search is tested
    (tests/test_pe_index.py) and measured at 1M rows by benchmarks/bench_speed.py.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        *,
        nlist: int | None = None,
        nprobe: int | None = None,
        train_rows: int = 40_000,
        seed: int = 0,
        path: str | Path | None = None,
    ):
        """``path``: where the trained index is kept (loaded when it matches the
        vectors' shape and ``nlist``, else built and saved there)."""
        from .errors import require

        faiss = require("faiss", "ann", "approximate vector search")
        self.vectors = np.asarray(vectors)
        n, dim = self.vectors.shape
        # sqrt(n) cells (1,000 at 1M rows: k-means trains in seconds on 2 cores) and
        # a sixteenth of them probed (at least 16): recall@50 ~0.98 on clustered data
        self.nlist = int(nlist or max(1, min(int(np.sqrt(n)), n // 40)))
        self.nprobe = int(nprobe or min(self.nlist, max(16, self.nlist // 16)))
        self.faiss = faiss
        self._exact = ExactIndex(self.vectors)
        path = Path(path) if path else None
        loaded = self._load(path) if path else None
        if loaded is not None:
            self.index = loaded
            self.index.nprobe = self.nprobe
            return
        self.index = self._build(train_rows, seed)
        if path:
            self._save(path)

    def _load(self, path: Path) -> Any:
        if not path.is_file():
            return None
        try:
            index = self.faiss.read_index(str(path))
            ok = (index.ntotal, index.d, getattr(index, "nlist", -1)) == (
                len(self.vectors),
                self.vectors.shape[1],
                self.nlist,
            )
        except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError and others
            log.warning("approximate index %s is unreadable (%s): rebuilding it", path, exc)
            return None
        if not ok:
            log.warning("approximate index %s does not match the vectors: rebuilding it", path)
            return None
        return index

    def _save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.faiss.write_index(self.index, str(tmp))
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:
            tmp.unlink(missing_ok=True)
            log.warning("cannot save the approximate index to %s (%s): not kept", path, exc)

    def _build(self, train_rows: int, seed: int) -> Any:
        faiss = self.faiss
        n, dim = self.vectors.shape
        started = time.perf_counter()
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        size = min(n, max(train_rows, 40 * self.nlist))
        sample = np.sort(rng.choice(n, size=size, replace=False))
        index.train(np.ascontiguousarray(self.vectors[sample], dtype=np.float32))
        for start in range(0, n, 100_000):  # in slices: a memory map is never copied whole
            index.add(np.ascontiguousarray(self.vectors[start : start + 100_000], np.float32))
        index.nprobe = self.nprobe
        # the quantizer must outlive this frame: faiss's Python wrapper does not own it
        self._quantizer = quantizer
        log.info(
            "approximate index: %d rows in %d cells, %.1f s",
            n,
            self.nlist,
            time.perf_counter() - started,
        )
        return index

    def search(self, query, k, rows=None):
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        k = int(k)
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            if len(rows) <= EXACT_POOL_MAX:
                return self._exact.search(query, k, rows=rows)
            k = min(k, len(rows))
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        # a few more candidates than asked, re-scored exactly: ties and rounding in the
        # inverted lists then cannot reorder the answer
        want = min(len(self.vectors), 2 * k + 10)
        params = bitmap = None
        if rows is not None:
            # a bitmap of the allowed rows: n / 8 bytes, built in microseconds (a hash
            # set of a large pool costs milliseconds per query)
            mask = np.zeros(len(self.vectors), dtype=bool)
            mask[rows] = True
            bitmap = np.packbits(mask, bitorder="little")
            selector = self.faiss.IDSelectorBitmap(len(mask), self.faiss.swig_ptr(bitmap))
            params = self.faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
        _, found = self.index.search(query[None, :], want, params=params)
        del bitmap  # kept alive until the search is done
        found = found[0][found[0] >= 0]
        scores = self.vectors[found] @ query
        return top_k(found, scores, min(k, len(found)))

    def search_pools(self, query, requests):
        return [self.search(query, k, rows=rows) for rows, k in requests]


def make_index(
    vectors: np.ndarray, *, approximate: bool | None = None, path: str | Path | None = None
) -> VectorIndex:
    """Exact search below :data:`APPROX_MIN_ROWS` rows, else :class:`IVFIndex` when
    faiss is installed (``approximate`` forces either), kept at ``path`` when given."""
    if approximate is None:
        import importlib.util

        approximate = (
            len(vectors) >= APPROX_MIN_ROWS and importlib.util.find_spec("faiss") is not None
        )
    return IVFIndex(vectors, path=path) if approximate else ExactIndex(vectors)


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
    #: rows taken from the shipped predictor's memory / from an interrupted build
    reused: int = 0
    resumed: int = 0


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
            "lock": self.dir / f"{key}.lock",
            "chunks": self.dir / f"{key}.chunks",
        }

    def writable(self) -> bool:
        """Whether the cache folder exists or can be made; if not, say so once."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning(
                "cannot create the embedding cache %s (%s): running uncached",
                self.dir,
                exc.strerror or exc,
            )
            return False
        return True

    def save_or_warn(self, key: str, entry: CacheEntry, expect: dict[str, Any]) -> bool:
        """:meth:`save`, but a failed write (a full disk, a read-only folder) is a
        warning and leaves no partial entry: the run goes on with the vectors in memory."""
        try:
            self.save(key, entry, expect)
        except OSError as exc:
            self.paths(key)["manifest"].unlink(missing_ok=True)
            log.warning(
                "cannot save the embedding cache in %s (%s): running uncached; free some "
                "space or set cache_dir to keep the embeddings for the next run",
                self.dir,
                exc.strerror or exc,
            )
            return False
        return True

    def load(self, key: str, expect: dict[str, Any]) -> CacheEntry | None:
        """The entry for ``key`` if it is whole and matches ``expect``; else None
        (a missing entry silently, a corrupt or stale one with a warning)."""
        paths = self.paths(key)
        if not paths["manifest"].exists():
            return None
        try:
            entry = self._read(key, paths, expect)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong, the entry is rebuilt
            log.warning(
                "embedding cache %s is corrupt or stale (%s: %s): rebuilding it",
                key,
                type(exc).__name__,
                exc,
            )
            return None
        return entry

    def _read(self, key: str, paths: dict[str, Path], expect: dict[str, Any]) -> CacheEntry:
        manifest = json.loads(paths["manifest"].read_text("utf-8"))
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise ValueError(f"the manifest is a {type(manifest).__name__} of the wrong shape")
        for name, value in expect.items():
            if manifest.get(name) != value:
                raise ValueError(f"{name} is {manifest.get(name)!r}, expected {value!r}")
        for name, info in manifest["files"].items():
            if name not in paths or not isinstance(info, dict):
                raise ValueError(f"the manifest lists an unknown file {name!r}")
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
            "reused_from_predictor": entry.reused,
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
                entry = build_entry(
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


# -- building ----------------------------------------------------------------------------

#: corpus rows per chunk file of a build in progress (an interrupted build loses at
#: most one chunk: about two seconds of embedding)
CHUNK_ROWS = 512


class ChunkStore:
    """The finished chunks of a build in progress: ``<dir>/<first row>.npy``, one
    (rows, d) float32 array per :data:`CHUNK_ROWS` corpus rows, each written
    atomically. A chunk that does not load whole is embedded again."""

    def __init__(self, root: Path):
        self.dir = root
        self.writable = True

    def path(self, start: int) -> Path:
        return self.dir / f"{start:09d}.npy"

    def load(self, start: int, rows: int) -> np.ndarray | None:
        path = self.path(start)
        if not path.exists():
            return None
        try:
            array = np.load(path, allow_pickle=False)
            if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] != rows:
                raise ValueError(f"shape {array.shape} {array.dtype}")
            if not np.isfinite(array).all():
                raise ValueError("non-finite values")
        except Exception as exc:  # noqa: BLE001 - a damaged chunk is simply redone
            log.warning("embedding chunk %s is damaged (%s): embedding it again", path.name, exc)
            return None
        return array

    def save(self, start: int, array: np.ndarray) -> None:
        if not self.writable:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.path(start), lambda fh: np.save(fh, array))
        except OSError as exc:
            self.writable = False
            log.warning(
                "cannot write embedding chunks to %s (%s): the build goes on in memory "
                "and cannot resume if interrupted",
                self.dir,
                exc.strerror or exc,
            )

    def remove(self) -> None:
        for path in self.dir.glob("*.npy"):
            path.unlink(missing_ok=True)
        with suppress(OSError):
            self.dir.rmdir()


def build_entry(
    corpus: Corpus,
    embedder: Embedder,
    *,
    chunks: ChunkStore | None = None,
    progress: bool | None = None,
    reuse_memory: bool = True,
) -> CacheEntry:
    """Fit the embedder (when it learns from the corpus) and embed every video and
    category name once, chunk by chunk (resuming from ``chunks``), reusing the
    shipped predictor's vectors where they are the same."""
    started = time.perf_counter()
    texts = corpus.texts
    names = corpus.categories
    embedder.fit([*texts, *names])
    categories = np.ascontiguousarray(embedder.embed(names), dtype=np.float32)
    dim = categories.shape[1]
    items = np.zeros((len(texts), dim), dtype=np.float32)
    todo = np.ones(len(texts), dtype=bool)
    spans = [(a, min(a + CHUNK_ROWS, len(texts))) for a in range(0, len(texts), CHUNK_ROWS)]
    resumed = 0
    for a, b in spans:
        done = chunks.load(a, b - a) if chunks else None
        if done is not None and done.shape[1] == dim:
            items[a:b] = done
            todo[a:b] = False
            resumed += b - a
    reused = 0
    if reuse_memory and todo.any():
        reused = _fill_from_memory(corpus, embedder, items, todo)
    total = int(todo.sum())
    # a warning so that the CLI shows why the first PE run takes a while
    log.warning(
        "embedding %d corpus texts with %s (%d reused from the shipped predictor, %d from "
        "an interrupted build; once: later runs read them from the cache)",
        total,
        embedder.id,
        reused,
        resumed,
    )
    bar = Progress(total, "embedding corpus texts", show=progress)
    for a, b in spans:
        missing = np.flatnonzero(todo[a:b]) + a
        if len(missing) == 0 and not (chunks and not chunks.path(a).exists()):
            continue
        for i in range(0, len(missing), EMBED_BATCH):
            part = missing[i : i + EMBED_BATCH]
            items[part] = embedder.embed([texts[j] for j in part])
            bar.advance(len(part))
        todo[a:b] = False
        if chunks:
            chunks.save(a, np.ascontiguousarray(items[a:b]))
    bar.close()
    seconds = time.perf_counter() - started
    log.info("embedded %d corpus texts with %s in %.1f s", total, embedder.id, seconds)
    return CacheEntry(
        items=items,
        categories=categories,
        category_names=list(names),
        state=embedder.state(),
        seconds=seconds,
        reused=reused,
        resumed=resumed,
    )


#: the shipped predictor, whose retrieval memory holds fp16 vectors of its training
#: videos keyed by video id
PREDICTOR_WEIGHTS = Path(__file__).resolve().parent / "models" / "default" / "weights.npz"
#: rows embedded afresh to check that the memory's vectors are this embedder's
MEMORY_CHECK_ROWS = 8
MEMORY_MIN_COSINE = 0.999


def _fill_from_memory(
    corpus: Corpus, embedder: Embedder, items: np.ndarray, todo: np.ndarray
) -> int:
    """Copy the shipped predictor's memory vectors into ``items`` for the rows still
    ``todo`` whose video it holds, after checking on a few rows that the memory was
    embedded by this embedder from the same texts (cosine >= 0.999; fp16 storage
    costs about 1e-7). Returns how many rows were filled."""
    try:
        with np.load(PREDICTOR_WEIGHTS, allow_pickle=False) as npz:
            # a plain retrieval model stores "memory_"; an ensemble its member's
            # ("mmra.memory_")
            prefix = next(
                (
                    p
                    for p in ("", "mmra.")
                    if f"{p}memory_" in npz.files and f"{p}memory_ids_" in npz.files
                ),
                None,
            )
            if prefix is None:
                return 0
            memory = npz[f"{prefix}memory_"]
            ids = npz[f"{prefix}memory_ids_"].astype(str)
    except Exception as exc:  # noqa: BLE001 - no memory to reuse: embed everything
        log.debug("no predictor memory to reuse (%s)", exc)
        return 0
    if memory.ndim != 2 or memory.shape[1] != items.shape[1] or len(ids) != len(memory):
        return 0
    where = {vid: i for i, vid in enumerate(ids)}
    video_ids = corpus.frame["video_id"].astype(str).tolist()
    rows = np.array([r for r in np.flatnonzero(todo) if video_ids[r] in where], dtype=np.int64)
    if len(rows) == 0:
        return 0
    source = np.array([where[video_ids[r]] for r in rows], dtype=np.int64)
    vectors = memory[source].astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors /= np.where(norms == 0, 1.0, norms)
    check = np.linspace(0, len(rows) - 1, min(MEMORY_CHECK_ROWS, len(rows))).astype(int)
    fresh = embedder.embed([corpus.texts[rows[i]] for i in check])
    cosine = np.sum(fresh * vectors[check], axis=1)
    if float(cosine.min()) < MEMORY_MIN_COSINE:
        log.info(
            "the shipped predictor's memory is not this embedder's (cosine %.3f): "
            "embedding every row",
            float(cosine.min()),
        )
        return 0
    items[rows] = vectors
    items[rows[check]] = fresh
    todo[rows] = False
    return len(rows)


#: a callback ``(what, done, total)`` told of every step of a corpus build in this
#: thread or task (the web studio streams it as the index-build percent of a first PE run)
_LISTENER: contextvars.ContextVar[Callable[[str, int, int], None] | None] = contextvars.ContextVar(
    "popcorn_index_progress", default=None
)


@contextmanager
def progress_listener(callback: Callable[[str, int, int], None]) -> Iterator[None]:
    """Call ``callback(what, done, total)`` as corpus builds started inside the block
    advance (an exception it raises, e.g. a cancel, stops the build; finished chunks are
    kept and a later build resumes from them)."""
    token = _LISTENER.set(callback)
    try:
        yield
    finally:
        _LISTENER.reset(token)


class Progress:
    """A progress bar on stderr: count, rate and time left. On a terminal it redraws
    one line; elsewhere (a log, CI) it prints a line every :attr:`every` seconds."""

    every = 5.0

    def __init__(self, total: int, what: str, *, show: bool | None = None, stream=None):
        import sys

        self.total, self.what = total, what
        self.stream = stream or sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.show = (tty if show is None else show) or (show is None and total > CHUNK_ROWS)
        self.tty = tty
        self.done = 0
        self.started = time.perf_counter()
        self._last = 0.0
        self._estimated = False

    def advance(self, n: int) -> None:
        self.done += n
        listener = _LISTENER.get()
        if listener is not None:
            listener(self.what, self.done, self.total)
        now = time.perf_counter()
        if not self.show:
            return
        if not self._estimated and self.done < self.total:
            self._estimated = True  # after the first batch: how long the whole will take
            rate = self.done / max(now - self.started, 1e-9)
            self._write(
                f"{self.what}: {self.total:,} to embed, about "
                f"{_clock((self.total - self.done) / rate)} left at {rate:,.0f}/s",
                newline=True,
            )
        if self.tty or now - self._last >= self.every or self.done >= self.total:
            self._last = now
            self._write(self.line(now), newline=not self.tty)

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        share = self.done / self.total if self.total else 1.0
        width = 24
        filled = int(width * share)
        return (
            f"{self.what}: [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done:,}/{self.total:,} ({share:.0%}) {rate:,.0f}/s ETA {_clock(left)}"
        )

    def _write(self, text: str, newline: bool) -> None:
        try:
            self.stream.write(("\r" + text + "\x1b[K") if self.tty and not newline else text)
            if newline:
                self.stream.write("\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed stream: progress is optional
            self.show = False

    def close(self) -> None:
        if self.show and self.total and self.tty:
            self._write("", newline=True)


def _clock(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
