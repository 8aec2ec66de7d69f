"""The study's statistics on plain rows: one dict per cell
(:func:`llmpopcorn.study.bench.cell_rows`).

A row has at least ``query_id``, ``query_kind``, ``llm``, ``mode``, ``refs`` (``None`` in
basic mode), ``video``, ``seed``, ``status`` and ``log2_comments``; optionally
``category``, ``is_llm``, ``ideator`` and ``ideator_model``.

* per arm (LLM x mode x refs x video) and query set: mean predicted log2 comments with a
  percentile-bootstrap 95 % interval;
* PE against basic, paired by query, LLM, video and seed: mean gain, its interval, the win
  rate (ties count half) and a two-sided Wilcoxon signed-rank p-value (scipy);
* the same per query category;
* head to head (the paper's table): for each query and seed, which LLM and which video
  generator produced the highest-scored result; wins per model on each query set.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

ALL = "all"


def bootstrap_ci(
    values: Sequence[float], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean (``None`` for fewer than 2 values)."""
    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(n_boot, len(data)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def wilcoxon_p(diffs: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zeros dropped, as
    Wilcoxon's original test). 1.0 when every difference is zero; ``None`` when scipy is
    missing or there are fewer than 2 pairs."""
    data = np.asarray(diffs, dtype=float)
    if len(data) < 2:
        return None
    if not np.any(data != 0):
        return 1.0
    try:
        from scipy.stats import wilcoxon
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return None
    result = wilcoxon(data, zero_method="wilcox", alternative="two-sided")
    p = float(result.pvalue)
    return None if math.isnan(p) else p


def arm_name(row: dict[str, Any]) -> str:
    """``basic`` or ``pe@50``: the mode with its number of references."""
    return "basic" if row["mode"] != "pe" else f"pe@{row.get('refs')}"


def _scored(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "ok" and r.get("log2_comments") is not None]


def _kinds(row: dict[str, Any]) -> tuple[str, str]:
    return (row["query_kind"], ALL)


def _sort_key(key: tuple) -> tuple:
    return tuple("" if k is None else str(k).zfill(6) if isinstance(k, int) else k for k in key)


def _natural(text: str) -> tuple:
    """``pe@10`` before ``pe@50`` before ``pe@100``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def arm_means(rows: list[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Per LLM x mode x refs x video and query set: n, mean, 95 % CI, failures."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    failed: dict[tuple, int] = defaultdict(int)
    for r in rows:
        arm = (r["llm"], r["mode"], r.get("refs"), r["video"])
        if r["status"] != "ok":
            failed[arm] += 1
    for r in _scored(rows):
        for kind in _kinds(r):
            groups[(r["llm"], r["mode"], r.get("refs"), r["video"], kind)].append(
                r["log2_comments"]
            )
    out = []
    for (llm, mode, refs, video, kind), values in sorted(
        groups.items(), key=lambda kv: _sort_key(kv[0])
    ):
        out.append(
            {
                "llm": llm,
                "mode": mode,
                "refs": refs,
                "video": video,
                "queries": kind,
                "n": len(values),
                "mean_log2_comments": float(np.mean(values)),
                "ci95": bootstrap_ci(values, n_boot=n_boot, seed=seed),
                "mean_expected_comments": float(np.mean(np.exp2(values))),
                "failed": failed.get((llm, mode, refs, video), 0),
            }
        )
    return out


def pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PE cells with their basic twin (same query, LLM, video, seed): one dict per pair."""
    scored = _scored(rows)
    basic = {
        (r["query_id"], r["llm"], r["video"], r["seed"]): r for r in scored if r["mode"] == "basic"
    }
    out = []
    for r in scored:
        if r["mode"] != "pe":
            continue
        twin = basic.get((r["query_id"], r["llm"], r["video"], r["seed"]))
        if twin is not None:
            out.append({"pe": r, "basic": twin, "gain": r["log2_comments"] - twin["log2_comments"]})
    return out


def paired_comparison(diffs: Sequence[float], *, n_boot: int, seed: int) -> dict[str, Any]:
    d = np.asarray(diffs, dtype=float)
    return {
        "pairs": len(d),
        "mean_gain_log2": float(d.mean()),
        "ci95": bootstrap_ci(d, n_boot=n_boot, seed=seed),
        "pe_win_rate": float(((d > 0) + 0.5 * (d == 0)).mean()),
        "wilcoxon_p": wilcoxon_p(d),
    }


def pe_vs_basic(rows: list[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Per LLM x refs x video and query set: the paired PE - basic comparison."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for p in pairs(rows):
        pe = p["pe"]
        for kind in _kinds(pe):
            groups[(pe["llm"], pe.get("refs"), pe["video"], kind)].append(p["gain"])
    return [
        {"llm": llm, "refs": refs, "video": video, "queries": kind}
        | paired_comparison(d, n_boot=n_boot, seed=seed)
        for (llm, refs, video, kind), d in sorted(groups.items(), key=lambda kv: _sort_key(kv[0]))
    ]


def query_categories(rows: list[dict[str, Any]]) -> dict[str, str]:
    """One category per query: the one PE's matcher chose (else the judge's category)."""
    out: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: r["mode"] != "pe"):  # PE rows first
        cat = r.get("category")
        if cat and r["query_id"] not in out:
            out[r["query_id"]] = str(cat)
    return out


def per_category(rows: list[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Per query category, LLM and refs: basic and PE means and the paired gain."""
    cats = query_categories(rows)
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for p in pairs(rows):
        pe = p["pe"]
        cat = cats.get(pe["query_id"], "?")
        groups[(cat, pe["llm"], pe.get("refs"))].append(
            (p["basic"]["log2_comments"], pe["log2_comments"])
        )
    out = []
    for (cat, llm, refs), values in sorted(groups.items(), key=lambda kv: _sort_key(kv[0])):
        basic, pe = np.array(values).T
        out.append(
            {
                "category": cat,
                "llm": llm,
                "refs": refs,
                "mean_basic": float(basic.mean()),
                "mean_pe": float(pe.mean()),
            }
            | paired_comparison(pe - basic, n_boot=n_boot, seed=seed)
        )
    return out


def head_to_head(rows: list[dict[str, Any]], by: str) -> dict[str, dict[str, float]]:
    """For each query and seed, which value of ``by`` (``llm``, ``video`` or ``arm``)
    produced the highest-scored result over everything else; wins per value and query
    set (ties share the win). Values that never win are listed with 0."""
    key_of = arm_name if by == "arm" else (lambda r: r[by])
    best: dict[tuple, dict[str, float]] = defaultdict(dict)
    kinds: dict[tuple, str] = {}
    values: set[str] = set()
    for r in _scored(rows):
        q = (r["query_id"], r["seed"])
        kinds[q] = r["query_kind"]
        v = str(key_of(r))
        values.add(v)
        best[q][v] = max(best[q].get(v, -math.inf), r["log2_comments"])
    wins: dict[str, dict[str, float]] = {}
    for q, scores in best.items():
        top = max(scores.values())
        winners = [v for v, s in scores.items() if s == top]
        for kind in (kinds[q], ALL):
            table = wins.setdefault(kind, dict.fromkeys(sorted(values, key=_natural), 0.0))
            for v in winners:
                table[v] += 1 / len(winners)
    return {k: wins[k] for k in sorted(wins)}


def honesty(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which ideators made the cells, and how many cells used no LLM."""
    ideators = sorted(
        {
            (str(r.get("ideator") or r["llm"]), str(r.get("ideator_model") or ""), r.get("is_llm"))
            for r in rows
            if r["status"] == "ok"
        },
        key=str,
    )
    no_llm = sum(1 for r in rows if r["status"] == "ok" and r.get("is_llm") is False)
    return {
        "no_llm_cells": no_llm,
        "ideators": [{"name": n, "model": m, "is_llm": i} for n, m, i in ideators],
    }


def summarise(rows: list[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every table of the study, as JSON-able data."""
    return {
        "total": len(rows),
        "ok": sum(r["status"] == "ok" for r in rows),
        "scored": len(_scored(rows)),
        "failed": sum(r["status"] == "failed" for r in rows),
        "cells": arm_means(rows, n_boot=n_boot, seed=seed),
        "pe_vs_basic": pe_vs_basic(rows, n_boot=n_boot, seed=seed),
        "per_category": per_category(rows, n_boot=n_boot, seed=seed),
        "head_to_head": {by: head_to_head(rows, by) for by in ("llm", "video", "arm")},
        **honesty(rows),
    }
