"""Before the study runs: does its judge already know the videos PE may show?

The study's judge must be independent of what it judges (DESIGN §1.4): a judge that
learned from the videos PE shows the LLM can reward PE for echoing them. Before any cell
runs, :func:`judge_independence` measures, for every pool an arm draws references from
(PE's ``--pe-pool``; the refine arm's examples come from the reference pool), how many of
its videos the judge learned from: by id (its memory or its training part), by normalised
title and as near-duplicates (:func:`llmpopcorn.corpus.independence.pool_overlap`).
:func:`require_independent` refuses a judge that overlaps by id or title unless the user
accepts it (``popcorn bench --allow-dependent-judge``); then every output carries
:func:`llmpopcorn.runs.honesty.dependent_judge_banner`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from llmpopcorn.core.errors import ConfigError, MissingExtraError, PopcornError
from llmpopcorn.core.settings import Settings
from llmpopcorn.runs.honesty import overlap_phrase

log = logging.getLogger(__name__)

#: the flag that lets a dependent judge run (a ``popcorn bench`` option, not a setting:
#: it changes no result, only whether the study may start)
ALLOW_FLAG = "--allow-dependent-judge"


def pools_shown(settings: Settings, modes: Sequence[str]) -> list[str]:
    """The reference pools the study's arms show to the LLM."""
    from llmpopcorn.study.bench import REFINE_ARM

    pools = [settings.pe_pool] if "pe" in modes else []
    if REFINE_ARM in modes:  # refinement's examples: PE's own, else the reference pool
        pools.append("reference")
    return list(dict.fromkeys(pools))


def judge_independence(
    settings: Settings, modes: Sequence[str], scorer: Any = None
) -> dict[str, Any]:
    """How much of each pool the arms draw from the judge learned from. ``scorer``: the
    loaded judge (else loaded from ``settings``). ``checked`` is False, with the reason,
    when there is nothing to check (no scoring, no arm that shows references) or no way
    to check (no corpus, a judge that cannot be loaded)."""
    pools = pools_shown(settings, modes)
    if not settings.score:
        return {"checked": False, "reason": "not scored (--no-score)", "dependent": False}
    if not pools:
        return {"checked": False, "reason": "no arm shows references", "dependent": False}
    from llmpopcorn.corpus.independence import judge_data, pool_overlap
    from llmpopcorn.corpus.table import load_corpus
    from llmpopcorn.pipeline.core import judge_memory

    try:
        if scorer is None:
            from llmpopcorn.predict import load_scorer

            scorer = load_scorer(settings)
        corpus = load_corpus(settings.data_dir)
    except (MissingExtraError, PopcornError) as exc:
        # the cells record the same problem; the per-cell overlap counts stay in the rows
        return {"checked": False, "reason": str(exc), "dependent": False}
    part = str(getattr(scorer, "part", "all"))
    judge = judge_data(corpus, part, judge_memory(scorer))
    # near-duplicates need PE's corpus index: open it (cached) only when PE will anyway
    index = _index(settings, corpus) if "pe" in modes else None
    found = [pool_overlap(corpus, pool, judge, index=index) for pool in pools]
    return {
        "checked": True,
        "judge": getattr(scorer, "name", type(scorer).__name__),
        "judge_part": part,
        "judge_memory": None if judge.memory is None else len(judge.memory),
        "pools": found,
        "dependent": any(p["dependent"] for p in found),
    }


def _index(settings: Settings, corpus: Any) -> Any:
    """PE's corpus index (cached embeddings) for the near-duplicate count, or None."""
    from llmpopcorn.core.cache import default_cache_dir
    from llmpopcorn.corpus.index import CorpusIndex, get_embedder

    try:
        embedder = get_embedder(settings.embedder, settings)
        return CorpusIndex.open(corpus, embedder, default_cache_dir(settings))
    except (MissingExtraError, PopcornError) as exc:
        log.warning("near-duplicates not counted: %s", exc)
        return None


def require_independent(facts: dict[str, Any], allow: bool) -> dict[str, Any]:
    """Raise a ConfigError when the judge overlaps a pool by id or title and ``allow`` is
    False; returns ``facts`` with ``allowed_dependent`` set."""
    if facts.get("dependent") and not allow:
        raise ConfigError(
            f"the judge '{facts['judge']}' (trained on the '{facts['judge_part']}' part) is "
            f"not independent of the references PE may show: {overlap_phrase(facts)}",
            "judge with a model trained on the judge part and draw references from the "
            "reference pool (--predictor judge --pe-pool reference, the study's defaults), "
            f"or pass {ALLOW_FLAG} to run anyway (every output then says so)",
        )
    return facts | {"allowed_dependent": bool(facts.get("dependent") and allow)}
