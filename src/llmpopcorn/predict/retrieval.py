"""Exact cosine retrieval over a memory of L2-normalised embeddings.

A row never retrieves itself: any memory entry whose id equals the query row's id is
excluded. During training the query rows *are* the memory, so this is MMRA's
"exclude the item itself"; at evaluation time it keeps a row that happens to be in
the memory from reading its own label.
"""

from __future__ import annotations

import numpy as np

BLOCK = 2048


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def id_positions(ids: np.ndarray) -> dict[str, int]:
    """Memory id -> row (pass it to :func:`retrieve` to skip rebuilding it per call)."""
    return {str(v): i for i, v in enumerate(ids)}


def retrieve(
    queries: np.ndarray,
    memory: np.ndarray,
    k: int,
    *,
    query_ids: np.ndarray | None = None,
    memory_ids: np.ndarray | dict[str, int] | None = None,
    memory_normalised: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n, k) into ``memory`` and cosine similarities (n, k), best first."""
    return retrieve_many(
        queries,
        memory,
        (k,),
        query_ids=query_ids,
        memory_ids=memory_ids,
        memory_normalised=memory_normalised,
    )[0]


def retrieve_many(
    queries: np.ndarray,
    memory: np.ndarray,
    ks: tuple[int, ...] | list[int],
    *,
    query_ids: np.ndarray | None = None,
    memory_ids: np.ndarray | dict[str, int] | None = None,
    memory_normalised: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`retrieve` at several ``ks`` from one similarity computation: the
    query-memory product (most of a retrieval's time) is done once, and each k's
    neighbours are selected from it exactly as a separate :func:`retrieve` would."""
    q = normalise(queries)
    m = memory if memory_normalised else normalise(memory)
    ks = [min(k, m.shape[0] - (1 if query_ids is not None else 0)) for k in ks]
    if min(ks, default=1) < 1:
        raise ValueError("the retrieval memory is too small")
    position: dict[str, int] = {}
    if query_ids is not None and memory_ids is not None:
        position = memory_ids if isinstance(memory_ids, dict) else id_positions(memory_ids)
    out = [
        (np.empty((q.shape[0], k), dtype=np.int64), np.empty((q.shape[0], k), dtype=np.float32))
        for k in ks
    ]
    for start in range(0, q.shape[0], BLOCK):
        block = q[start : start + BLOCK] @ m.T
        if position:
            for row, qid in enumerate(query_ids[start : start + BLOCK]):
                hit = position.get(str(qid))
                if hit is not None:
                    block[row, hit] = -np.inf
        for k, (idx, sim) in zip(ks, out, strict=True):
            idx[start : start + BLOCK], sim[start : start + BLOCK] = _top_k(block, k)
    return out


def _top_k(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest entries of each row of ``block`` (indices, values), best first."""
    top = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < block.shape[1] else None
    if top is None:
        top = np.tile(np.arange(block.shape[1]), (block.shape[0], 1))
    vals = np.take_along_axis(block, top, axis=1)
    # stable order: by similarity, then by memory index (deterministic ties)
    order = np.lexsort((top, -vals), axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(vals, order, axis=1)
