"""Saying when no LLM was used: one label for every output that lists results.

The offline stand-in (a deterministic template composer) is the default ideator, so a
study, a batch or a listing of either can hold results no language model wrote. Rows
(a study's cells, a batch's items) carry ``status``, ``is_llm``, ``ideator`` and
``ideator_model``; :func:`ideators` counts them and :func:`no_llm_banner` is the one
sentence every output shows (DESIGN §4.15: outputs say when no LLM was used).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: the short mark beside one result of the stand-in in a listing
NO_LLM_MARK = "[no LLM]"


def ideators(rows: Iterable[dict[str, Any]], fallback: str = "llm") -> dict[str, Any]:
    """Which ideators made the rows (failed ones included, so a run whose every row
    failed still names its LLM), how many finished rows used no LLM and how many
    finished. ``fallback``: the row field naming the backend when ``ideator`` is unset."""
    seen: set[tuple[str, str, bool | None]] = set()
    no_llm = finished = 0
    for r in rows:
        if r.get("status") not in ("ok", "failed"):
            continue
        name = r.get("ideator") or r.get(fallback) or "unknown"
        seen.add((str(name), str(r.get("ideator_model") or ""), r.get("is_llm")))
        if r["status"] == "ok":
            finished += 1
            no_llm += r.get("is_llm") is False
    return {
        "no_llm_cells": no_llm,
        "finished": finished,
        "ideators": [{"name": n, "model": m, "is_llm": i} for n, m, i in sorted(seen, key=str)],
    }


def named(found: Iterable[dict[str, Any]]) -> str:
    """``offline (offline-composer-v4), openai (gpt-4o-mini)``."""
    return ", ".join(f"{i['name']} ({i['model'] or 'default model'})" for i in found)


def no_llm_banner(
    no_llm: int, finished: int, found: Iterable[dict[str, Any]], what: str = "cells"
) -> str | None:
    """The banner when ``no_llm`` of ``finished`` results came from a stand-in."""
    if not no_llm:
        return None
    names = named(i for i in found if i["is_llm"] is False)
    return (
        f"NO LLM WAS USED in {no_llm} of {finished} finished {what}: their ideas come from "
        f"{names or 'a stand-in'}, a deterministic template composer, not a language model. "
        "Differences between modes measure that stand-in, not an LLM. Use --llm deepseek / "
        "openai / ollama / vllm / llamacpp / transformers for LLM results."
    )


def dependent_judge_banner(independence: dict[str, Any] | None) -> str | None:
    """The banner of a study that ran with a judge which learned from videos its arms may
    show the LLM (``popcorn bench --allow-dependent-judge``; see
    :mod:`llmpopcorn.study.independence`), ``None`` for an independent judge."""
    if not independence or not independence.get("dependent"):
        return None
    return (
        f"DEPENDENT JUDGE (--allow-dependent-judge): the judge {independence['judge']} "
        f"learned from videos PE may show the LLM: {overlap_phrase(independence)}. A gain "
        "may reward echoing what the judge already knows; for an independent judge use "
        "--predictor judge --pe-pool reference."
    )


def overlap_phrase(independence: dict[str, Any]) -> str:
    """``of the 5,062 videos of the 'reference' pool it learned from 0 by id and 0 by
    normalised title (32 near-duplicates, cosine >= 0.95)``, one clause per pool."""
    out = []
    for p in independence.get("pools", []):
        near = "not checked" if p["near_duplicates"] is None else f"{p['near_duplicates']:,}"
        out.append(
            f"of the {p['pool_videos']:,} videos of the '{p['pool']}' pool it learned from "
            f"{p['by_id']:,} by id and {p['by_title']:,} by normalised title "
            f"({near} near-duplicates, cosine >= {p['cosine']})"
        )
    return "; ".join(out)
