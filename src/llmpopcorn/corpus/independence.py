"""How much a judge already knows of the videos shown to an ideator.

A judge (a popularity predictor) learned from some corpus rows: the part it was trained
on (:mod:`llmpopcorn.corpus.partition`; validation and test rows included) and, for a
retrieval model, the videos in its memory. A reference video shown to the LLM is *known*
to the judge when

* its **id** is one the judge learned from (its memory, else its training part);
* its **normalised title** (:func:`~llmpopcorn.core.copycheck.normalise_title`) equals
  the title of a video the judge learned from (the same title posted twice is one idea,
  whatever its ids);
* it is a **near-duplicate** of such a video: cosine similarity of the corpus embeddings
  (the cached PE index, :mod:`llmpopcorn.corpus.index`) at least
  :data:`NEAR_DUPLICATE_COSINE`. This count includes the two above whenever their
  embeddings agree (it is "anything the judge has seen nearly as is").

:func:`reference_overlap` counts this for the references of one run (the record's
independence block and the study's cells), :func:`pool_overlap` for a whole reference
pool (the study refuses a judge that overlaps its pool, see
:mod:`llmpopcorn.study.independence`). Both read one :class:`JudgeData`, built once per
corpus, judge part and memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the cosine at or above which two videos count as near-duplicates. Measured on the
#: MicroLens embeddings (MiniLM, title text): pairs at >= 0.95 are rewordings or reposts
#: of one video ("Mexico's alternative exorcism" / "Mexico alternative exorcism", "Dazuo
#: defeated and fled" / "Dazuo was defeated and fled"); between 0.90 and 0.95 they are
#: mostly other episodes of one series or generic hashtag strings. 32 of the 5,062 videos
#: of the reference pool have a judge-part video at >= 0.95 (73 at >= 0.90)
NEAR_DUPLICATE_COSINE = 0.95
#: rows of the judge's data multiplied at once (bounds the memory of one product)
_CHUNK = 4096


@dataclass(eq=False)
class JudgeData:
    """The rows of one corpus that a judge learned from and their normalised titles."""

    part: str
    #: bool mask over the corpus rows: the judge's training part, plus rows in its memory
    rows: np.ndarray
    titles: frozenset[str]
    #: the video ids in its retrieval memory (None: it has none)
    memory: frozenset[str] | None
    #: the corpus rows' normalised titles and video id -> row (shared with the corpus)
    row_titles: np.ndarray
    row_of: dict[str, int]
    _nearest: dict[tuple[str, int], float] = field(default_factory=dict)
    _matrix: dict[str, np.ndarray] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def known_id(self, video_id: str) -> bool:
        """Is this id one the judge learned from (its memory or its training part)?"""
        if self.memory is not None and video_id in self.memory:
            return True
        row = self.row_of.get(video_id)
        if row is None:  # not in this corpus: the part is a function of the id alone
            from llmpopcorn.corpus.partition import in_part

            return bool(in_part([video_id], self.part)[0])
        return bool(self.rows[row])

    def nearest(self, vectors: np.ndarray, rows: Sequence[int], key: str) -> np.ndarray:
        """The highest cosine between each of ``rows`` and any row the judge learned from
        (``vectors``: the corpus rows' L2-normalised embeddings, ``key`` names them)."""
        rows = [int(r) for r in rows]
        with self._lock:
            todo = sorted({r for r in rows if (key, r) not in self._nearest})
            if todo:
                if key not in self._matrix:
                    self._matrix[key] = np.ascontiguousarray(vectors[self.rows], np.float32)
                known = self._matrix[key]
                queries = np.asarray(vectors[todo], dtype=np.float32)
                best = np.full(len(todo), -1.0, dtype=np.float32)
                for start in range(0, len(known), _CHUNK):
                    block = queries @ known[start : start + _CHUNK].T
                    if block.size:
                        best = np.maximum(best, block.max(axis=1))
                self._nearest.update(((key, r), float(b)) for r, b in zip(todo, best, strict=True))
            return np.array([self._nearest[(key, r)] for r in rows], dtype=np.float32)


_CACHE: OrderedDict[tuple, JudgeData] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _corpus_key(corpus: Any) -> str:
    return str(getattr(corpus, "sha256", "") or id(corpus.frame))


def judge_data(corpus: Any, part: str, memory: Iterable[str] | None = None) -> JudgeData:
    """What a judge trained on ``part`` with retrieval ``memory`` (video ids) learned from,
    in ``corpus`` (a :class:`~llmpopcorn.corpus.table.Corpus`). Built once per corpus,
    part and memory (a few tenths of a second on MicroLens) and then shared."""
    from llmpopcorn.corpus.partition import _normalised_titles, check_part, in_part

    check_part(part)
    memory = None if memory is None else frozenset(str(v) for v in memory)
    key = (_corpus_key(corpus), part, memory)
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is not None:
            _CACHE.move_to_end(key)
            return found
    frame = corpus.frame
    ids = frame["video_id"].astype(str).tolist()
    rows = in_part(ids, part)
    if memory:
        rows = rows | np.fromiter((v in memory for v in ids), dtype=bool, count=len(ids))
    titles = _normalised_titles(frame)
    data = JudgeData(
        part=part,
        rows=rows,
        titles=frozenset(t for t in titles[rows] if t),
        memory=memory,
        row_titles=titles,
        row_of={v: i for i, v in enumerate(ids)},
    )
    with _CACHE_LOCK:
        _CACHE[key] = data
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    return data


def _vectors_of(index: Any) -> tuple[np.ndarray | None, str | None]:
    """The corpus rows' embeddings of a :class:`~llmpopcorn.corpus.index.CorpusIndex` and
    a key naming them (None, None without an index)."""
    entry = getattr(index, "entry", None)
    if entry is None:
        return None, None
    return np.asarray(entry.items), str(getattr(entry, "key", "") or index.embedder.id)


def reference_overlap(
    references: Sequence[Any],
    judge: JudgeData,
    *,
    index: Any = None,
    threshold: float = NEAR_DUPLICATE_COSINE,
) -> dict[str, Any]:
    """How many of ``references`` (objects with ``video_id`` and ``title``) the judge
    knows: in its retrieval memory (``None``: it has none), by id (memory or training
    part), by normalised title and as near-duplicates (with ``index``, the corpus index
    the references came from; ``None`` without one)."""
    from llmpopcorn.core.copycheck import normalise_title

    ids = [str(r.video_id) for r in references]
    by_title = sum(normalise_title(str(r.title or "")) in judge.titles for r in references)
    out: dict[str, Any] = {
        "references": len(references),
        "in_memory": None if judge.memory is None else sum(v in judge.memory for v in ids),
        "by_id": sum(judge.known_id(v) for v in ids),
        "by_title": int(by_title),
        "near_duplicates": None,
        "cosine": threshold,
        "method": method(judge, index),
    }
    vectors, key = _vectors_of(index)
    rows = [judge.row_of.get(v) for v in ids]
    if vectors is not None and references and all(r is not None for r in rows):
        out["near_duplicates"] = int((judge.nearest(vectors, rows, key) >= threshold).sum())
    return out


def method(judge: JudgeData, index: Any = None) -> str:
    """How :func:`reference_overlap` and :func:`pool_overlap` counted (for the reader)."""
    ids = ("ids: judge memory and " if judge.memory is not None else "ids: ") + (
        f"the judge's training part ({judge.part})"
    )
    near = (
        f"near-duplicates: cosine >= {NEAR_DUPLICATE_COSINE} on {index.embedder.id} embeddings"
        if getattr(index, "entry", None) is not None
        else "near-duplicates: not checked (no corpus index)"
    )
    return f"{ids}; titles: normalised, of the same videos; {near}"


def pool_overlap(
    corpus: Any,
    pool: str,
    judge: JudgeData,
    *,
    index: Any = None,
    threshold: float = NEAR_DUPLICATE_COSINE,
) -> dict[str, Any]:
    """How much of the reference ``pool`` (:func:`~llmpopcorn.corpus.partition.in_pool`)
    the judge learned from: pool videos in its memory, by id (its memory or training
    part), sharing a normalised title with those videos, and near-duplicates of them
    (with ``index``). ``dependent``: some overlap by id or title."""
    from llmpopcorn.corpus.partition import POOL_RULE, in_pool

    rows = np.flatnonzero(in_pool(corpus.frame, pool))
    ids = corpus.frame["video_id"].astype(str).to_numpy()[rows]
    out: dict[str, Any] = {
        "pool": pool,
        "pool_rule": POOL_RULE if pool == "reference" else "every video of the corpus",
        "pool_videos": int(rows.size),
        "judge_part": judge.part,
        "in_memory": None if judge.memory is None else int(sum(v in judge.memory for v in ids)),
        "by_id": int(judge.rows[rows].sum()),
        "by_title": int(sum(t in judge.titles for t in judge.row_titles[rows] if t)),
        "near_duplicates": None,
        "cosine": threshold,
        "method": method(judge, index),
    }
    vectors, key = _vectors_of(index)
    if vectors is not None and rows.size:
        out["near_duplicates"] = int((judge.nearest(vectors, rows, key) >= threshold).sum())
    out["dependent"] = bool(out["by_id"] or out["by_title"])
    return out
