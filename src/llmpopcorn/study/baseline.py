"""The study's human baseline: what people actually posted about each query.

For every benchmark query, the ``k`` real MicroLens videos nearest to it (by the PE
embedder, among the *reference pool* of the corpus: the reference part less the titles
shared with the judge part, so the independent judge never trained on them by id or by
title) with their true log2 comment counts and the judge's predictions for them.
It shows how LLM ideas compare with real posts on the judge's scale, and how far the
judge is from the truth on real videos of the same topics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmpopcorn.core.settings import Settings

log = logging.getLogger(__name__)


def human_baseline(
    queries: Sequence[Any],
    settings: Settings,
    *,
    scorer: Any = None,
    k: int = 5,
    part: str = "reference",
) -> dict[str, Any]:
    """``queries`` are :class:`~llmpopcorn.study.bench.BenchQuery`; ``scorer`` a loaded
    :class:`~llmpopcorn.predict.PopularityScorer` (``None``: no predictions)."""
    from llmpopcorn.corpus.index import CorpusIndex, get_embedder
    from llmpopcorn.corpus.partition import in_pool
    from llmpopcorn.corpus.table import TEXT_FIELDS, item_text, load_corpus

    corpus = load_corpus(settings.data_dir)
    frame = corpus.frame
    index = CorpusIndex.open(corpus, get_embedder(settings.embedder, settings), settings.cache_dir)
    pool = np.flatnonzero(in_pool(frame, part))
    per_query, chosen = [], []
    vectors = index.embedder.embed([q.text for q in queries]) if queries else []
    for q, vector in zip(queries, vectors, strict=True):
        rows, sims = index.index.search(vector, k, pool)
        chosen.append(rows)
        per_query.append(
            {
                "query_id": q.query_id,
                "query_kind": q.kind,
                "video_ids": [str(frame["video_id"].iat[int(r)]) for r in rows],
                "titles": [str(frame["title_en"].iat[int(r)]) for r in rows],
                "similarity": [round(float(s), 4) for s in sims],
                "true_log2": [
                    float(np.log2(max(int(frame["comment_count"].iat[int(r)]), 1))) for r in rows
                ],
            }
        )
    predictor, fields, known = None, None, {}
    if scorer is not None and chosen:
        from llmpopcorn.predict.data import Table

        every = np.concatenate(chosen)
        sub = frame.iloc[every]
        # the text fields the judge learned from (title only for the shipped models), as
        # it reads them for an idea
        fields = (getattr(scorer, "inputs", None) or {}).get("text_fields", list(TEXT_FIELDS))
        parts = [
            sub[column].tolist() if name in fields else [""] * len(sub)
            for name, column in TEXT_FIELDS.items()
        ]
        table = Table(
            ids=sub["video_id"].astype(str).tolist(),
            texts=[item_text(t, c, p) for t, c, p in zip(*parts, strict=True)],
            categories=sub["partition"].tolist(),
            titles=sub["title_en"].tolist(),
        )
        scores = scorer.score_table(table)
        start = 0
        for entry in per_query:
            n = len(entry["video_ids"])
            entry["predicted_log2"] = [s.log2_comments for s in scores[start : start + n]]
            start += n
        predictor = getattr(scorer, "name", type(scorer).__name__)
        known = _known_to(scorer, corpus, index, table)
    true = np.array([v for e in per_query for v in e["true_log2"]], dtype=float)
    out: dict[str, Any] = {
        "part": part,
        "judge_fields": fields,
        "k": k,
        "embedder": settings.embedder,
        "videos": int(true.size),
        "distinct_videos": len({v for e in per_query for v in e["video_ids"]}),
        "true_mean_log2": float(true.mean()) if true.size else None,
        "predictor": predictor,
        "videos_in_predictor_memory": known.get("in_memory"),
        # by content too: a real video whose title the judge learned from (the same title
        # posted again in the judge's part) or a near-copy of one is not unseen for it
        "videos_title_in_predictor_data": known.get("by_title"),
        "videos_near_predictor_data": known.get("near_duplicates"),
        "near_duplicate_cosine": known.get("cosine"),
        "per_query": per_query,
    }
    if predictor is not None and true.size:
        pred = np.array([v for e in per_query for v in e["predicted_log2"]], dtype=float)
        out["predicted_mean_log2"] = float(pred.mean())
        out["mae_log2"] = float(np.abs(pred - true).mean())
        out["spearman"] = _spearman(pred, true)
    return out


def _known_to(scorer: Any, corpus: Any, index: Any, table: Any) -> dict[str, Any]:
    """How many of the baseline's videos the judge learned from (one count per video
    shown, as for PE's references: :func:`~llmpopcorn.corpus.independence.reference_overlap`)."""
    from types import SimpleNamespace

    from llmpopcorn.corpus.independence import judge_data, reference_overlap

    memory = getattr(getattr(scorer, "model", None), "memory_ids_", None)
    judge = judge_data(corpus, str(getattr(scorer, "part", "all")), memory)
    pairs = zip(table.ids, table.titles, strict=True)
    videos = [SimpleNamespace(video_id=v, title=t) for v, t in pairs]
    return reference_overlap(videos, judge, index=index)


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)
