"""Building the corpus embeddings: fit the embedder, embed every video chunk by chunk
(resuming an interrupted build) and reuse the vectors the shipped predictor already holds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmpopcorn.core.progress import Progress
from llmpopcorn.corpus.embcache import CHUNK_ROWS, CacheEntry, ChunkStore
from llmpopcorn.corpus.table import Corpus

if TYPE_CHECKING:  # pragma: no cover
    from llmpopcorn.backends.base import Embedder

log = logging.getLogger(__name__)


EMBED_BATCH = 512  # texts per embedder call while building (the embedder batches inside)


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
    log.info(
        "embedding %d corpus texts with %s (%d reused from the shipped predictor, %d from "
        "an interrupted build)",
        total,
        embedder.id,
        reused,
        resumed,
    )
    # the one line that says why the first PE run takes a while
    kept = f", {reused + resumed:,} reused" if reused + resumed else ""
    bar = Progress(total, f"embedding the corpus once (cached for later runs{kept})", show=progress)
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
PREDICTOR_WEIGHTS = (
    Path(__file__).resolve().parent.parent / "predict" / "models" / "default" / "weights.npz"
)
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
