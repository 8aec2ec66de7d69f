"""Vector search over L2-normalised embeddings.

:class:`ExactIndex` is a NumPy matrix-vector product, exact and fast at MicroLens size
(16,740 x 384 floats: about 2 ms per query). :class:`IVFIndex` (faiss, the ``[ann]``
extra) is the approximate index for millions of rows, with the same ``search`` and
``rows`` as its filter; :func:`make_index` picks it above :data:`APPROX_MIN_ROWS` rows.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    pass

log = logging.getLogger(__name__)


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
        from llmpopcorn.core.errors import require

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
