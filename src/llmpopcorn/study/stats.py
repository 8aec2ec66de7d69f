"""The study's statistics on plain rows: one dict per cell
(:func:`llmpopcorn.study.bench.cell_rows`).

A row has at least ``query_id``, ``query_kind``, ``llm``, ``mode``, ``refs`` (``None`` in
basic mode), ``video``, ``seed``, ``status`` and a score column (``log2_comments`` unless
told otherwise); optionally ``category``, ``is_llm``, ``ideator``, ``ideator_model``,
``failure`` (why a failed cell failed) and ``attempt_reasons`` (why rejected replies
were re-asked).

**The query is the unit.** Seeds (and variants) of one query share the query: a query
the arm happens to suit lifts all its seeds at once, so cells of one query are not
independent draws. Every comparison therefore averages each arm over its cells within a
query first, pairs the two arms by query (pairs = queries), bootstraps the per-query
differences and runs the Wilcoxon signed-rank test on them. Counting seeds as pairs
rejected a true null 38.5 % of the time at the 5 % level (40 queries x 5 seeds with a
query x arm interaction); per query it holds its level (``tests/test_study_stats.py``).

* :func:`compare_arms`: one arm against a control (``basic``) under one score column,
  with the worst-case sensitivity line (failed cells counted as the arm's worst score).
  The reusable unit: PE against basic uses it, and so can any later arm or judge.
* :func:`arm_vs_control`: that comparison for every LLM x video x query set, as one
  family of tests with Holm-adjusted p-values (:func:`holm`) beside the raw ones.
* :func:`attrition`: per arm, cells attempted, valid and invalid by reason.
* :func:`per_category`: the same comparison per query category (exploratory: many small
  tests, adjusted as their own family).
* :func:`head_to_head`: for each query, which LLM / video generator / arm produced the
  highest-scored result; the video generator's table only when the judge reads pixels
  (:func:`measurable`).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

ALL = "all"
SCORE = "log2_comments"
CONTROL = "basic"
#: how a family of tests is adjusted (stated in every output that shows adjusted p)
ADJUSTMENT = "holm"
ADJUSTMENT_TEXT = "Holm (family-wise error rate 5 %)"
#: why a cell failed or a reply was re-asked, in display order (the record fields
#: ``RunRecord.failure`` and ``Attempt.reason``; see /work/team/NOTES.md)
REASONS = (
    "parse",
    "copy",
    "duplicate",
    "truncated",
    "timeout",
    "refused",
    "error",
    "render",
    "score",
    "setup",
    "interrupted",
)
#: how a judge's inputs are listed ("it reads title and category")
INPUT_ORDER = ("title", "cover_prompt", "video_prompt", "category", "cover", "clip")
#: what each axis of the grid changes in a cell's output: a comparison along an axis
#: measures something only if the judge reads one of these
AXIS_CHANGES = {
    "llm": frozenset({"title", "cover_prompt", "video_prompt"}),
    "arm": frozenset({"title", "cover_prompt", "video_prompt"}),
    "video": frozenset({"cover", "clip"}),
}


# -- tests ----------------------------------------------------------------------------


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


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (``None`` stays ``None`` and
    does not count in the family). Controls the family-wise error rate under any
    dependence between the tests, which the study's overlapping tests have."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    m, running = len(present), 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def paired_comparison(diffs: Sequence[float], *, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean, bootstrap interval, win rate (ties count half) and Wilcoxon p of per-unit
    differences (one per query in the study)."""
    d = np.asarray(diffs, dtype=float)
    if not len(d):
        return {"pairs": 0, "mean_gain_log2": None, "ci95": None, "win_rate": None,
                "wilcoxon_p": None}  # fmt: skip
    return {
        "pairs": len(d),
        "mean_gain_log2": float(d.mean()),
        "ci95": bootstrap_ci(d, n_boot=n_boot, seed=seed),
        "win_rate": float(((d > 0) + 0.5 * (d == 0)).mean()),
        "wilcoxon_p": wilcoxon_p(d),
    }


# -- rows -----------------------------------------------------------------------------


def arm_name(row: dict[str, Any]) -> str:
    """``basic``, ``pe@50``, or another mode's name (with ``@refs`` when it has any)."""
    mode = str(row["mode"])
    refs = row.get("refs")
    if mode == "basic":
        return "basic"
    return f"{mode}@{refs}" if refs is not None else mode


def _scored(rows: Iterable[dict[str, Any]], score: str = SCORE) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "ok" and r.get(score) is not None]


def _kinds(row: dict[str, Any]) -> tuple[str, str]:
    return (row["query_kind"], ALL)


def _sort_key(key: tuple) -> tuple:
    return tuple("" if k is None else str(k).zfill(6) if isinstance(k, int) else k for k in key)


def _natural(text: str) -> tuple:
    """``pe@10`` before ``pe@50`` before ``pe@100``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def query_means(rows: Iterable[dict[str, Any]], score: str = SCORE) -> dict[str, float]:
    """Each query's mean score over its scored cells (seeds, variants)."""
    values: dict[str, list[float]] = defaultdict(list)
    for r in _scored(rows, score):
        values[r["query_id"]].append(float(r[score]))
    return {q: float(np.mean(v)) for q, v in values.items()}


def _worst_case_means(rows: list[dict[str, Any]], score: str) -> tuple[dict[str, float], int]:
    """Query means with every failed cell counted as the arm's worst score among
    ``rows``; also how many cells were imputed. Nothing to impute from: ({}, failures)."""
    scored = _scored(rows, score)
    failed = [r for r in rows if r["status"] == "failed"]
    if not scored:
        return {}, len(failed)
    worst = min(float(r[score]) for r in scored)
    filled = scored + [{**r, "status": "ok", score: worst} for r in failed]
    return query_means(filled, score), len(failed)


def query_pairs(
    rows: list[dict[str, Any]], arm: str, control: str = CONTROL, score: str = SCORE
) -> list[tuple[str, float, float]]:
    """``(query_id, control mean, arm mean)`` for every query both arms scored."""
    a = query_means((r for r in rows if arm_name(r) == arm), score)
    b = query_means((r for r in rows if arm_name(r) == control), score)
    return [(q, b[q], a[q]) for q in sorted(set(a) & set(b))]


def compare_arms(
    rows: list[dict[str, Any]],
    arm: str,
    control: str = CONTROL,
    *,
    score: str = SCORE,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """``arm`` - ``control`` on ``rows`` of one stratum (one LLM, video and query set):
    each arm averaged within each query, paired by query; the gain, its bootstrap 95 %
    interval, the arm's win rate over queries and the Wilcoxon p-value; the cells each
    side used; and ``worst_case``: the same with every failed cell counted as its arm's
    worst score in the stratum (an arm that fails more often loses there)."""
    found = query_pairs(rows, arm, control, score)
    out: dict[str, Any] = {
        "arm": arm,
        "control": control,
        "score": score,
        **paired_comparison([a - b for _, b, a in found], n_boot=n_boot, seed=seed),
        "cells_used": {
            side: sum(1 for r in _scored(rows, score) if arm_name(r) == side)
            for side in (arm, control)
        },
    }
    a, a_imputed = _worst_case_means([r for r in rows if arm_name(r) == arm], score)
    b, b_imputed = _worst_case_means([r for r in rows if arm_name(r) == control], score)
    common = sorted(set(a) & set(b))
    worst = paired_comparison([a[q] - b[q] for q in common], n_boot=n_boot, seed=seed)
    worst["imputed"] = {arm: a_imputed, control: b_imputed}
    out["worst_case"] = worst
    return out


def arm_vs_control(
    rows: list[dict[str, Any]],
    arms: Sequence[str] | Callable[[str], bool] | None = None,
    control: str = CONTROL,
    *,
    score: str = SCORE,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """:func:`compare_arms` for every arm (``arms``: names or a predicate; default every
    arm but the control) x LLM x video x query set (each kind and ``all``), as one
    family: each row has ``wilcoxon_p`` (raw) and ``p_adjusted`` (:func:`holm` over the
    family). Strata where the arm or the control has no cell are left out."""
    wanted = arms if callable(arms) else (lambda a: a in arms) if arms is not None else None
    strata: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    names: set[tuple] = set()
    for r in rows:
        for kind in _kinds(r):
            strata[(r["llm"], r["video"], kind)].append(r)
        names.add((r["llm"], r["video"], arm_name(r)))
    out = []
    for (llm, video, kind), group in sorted(strata.items(), key=lambda kv: _sort_key(kv[0])):
        if (llm, video, control) not in names:
            continue
        for arm in sorted({a for (l_, v, a) in names if (l_, v) == (llm, video)}, key=_natural):
            if arm == control or (wanted is not None and not wanted(arm)):
                continue
            refs = next((r.get("refs") for r in group if arm_name(r) == arm), None)
            head = {"llm": llm, "arm": arm, "refs": refs, "video": video, "queries": kind}
            out.append(head | compare_arms(group, arm, control, score=score, n_boot=n_boot,
                                           seed=seed))  # fmt: skip
    for row, p in zip(out, holm([r["wilcoxon_p"] for r in out]), strict=True):
        row["p_adjusted"] = p
        row["adjustment"] = ADJUSTMENT
    return out


def pe_vs_basic(rows: list[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Per LLM x refs x video and query set: PE - basic by query, Holm-adjusted over
    this family (refs x query set x LLM x video)."""
    return arm_vs_control(
        rows, lambda a: a.startswith("pe@") or a == "pe", n_boot=n_boot, seed=seed
    )


def pairs(rows: list[dict[str, Any]], score: str = SCORE) -> list[dict[str, Any]]:
    """Per-query pairs of every PE arm with basic (same LLM and video): one dict per
    query with both means and the gain (what the slope chart draws)."""
    out = []
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["llm"], r["video"])].append(r)
    for (llm, video), group in sorted(groups.items()):
        for arm in sorted({arm_name(r) for r in group if r["mode"] == "pe"}, key=_natural):
            refs = next(r.get("refs") for r in group if arm_name(r) == arm)
            for q, basic, pe in query_pairs(group, arm, CONTROL, score):
                out.append(
                    {"llm": llm, "video": video, "arm": arm, "refs": refs, "query_id": q,
                     "basic": basic, "pe": pe, "gain": pe - basic}
                )  # fmt: skip
    return out


# -- tables ---------------------------------------------------------------------------


def failure_reason(row: dict[str, Any]) -> str:
    """A failed row's reason: its ``failure`` field, else ``error`` (older rows)."""
    reason = row.get("failure")
    return str(reason) if reason else "error"


def attrition(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per LLM x arm x video: cells attempted, valid (finished and scored), invalid by
    reason, unfinished (held elsewhere or interrupted); and the replies rejected and
    re-asked along the way, by reason (also in cells that ended valid)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["llm"], arm_name(r), r["video"])].append(r)
    out = []
    for (llm, arm, video), group in sorted(
        groups.items(), key=lambda kv: (kv[0][0], _natural(kv[0][1]), kv[0][2])
    ):
        invalid = Counter(failure_reason(r) for r in group if r["status"] == "failed")
        rejected = Counter(
            str(reason or "parse") for r in group for reason in (r.get("attempt_reasons") or [])
        )
        valid = len(_scored(group))
        finished_unscored = sum(1 for r in group if r["status"] == "ok") - valid
        out.append(
            {
                "llm": llm,
                "arm": arm,
                "video": video,
                "attempted": len(group),
                "valid": valid,
                "invalid": sum(invalid.values()),
                "invalid_by_reason": _ordered(invalid),
                "not_scored": finished_unscored,
                "unfinished": sum(1 for r in group if r["status"] not in ("ok", "failed")),
                "valid_rate": valid / len(group) if group else None,
                "rejected_replies_by_reason": _ordered(rejected),
            }
        )
    return out


def _ordered(counts: Counter) -> dict[str, int]:
    order = {r: i for i, r in enumerate(REASONS)}
    return {k: counts[k] for k in sorted(counts, key=lambda k: (order.get(k, len(order)), k))}


def arm_means(rows: list[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Per LLM x mode x refs x video and query set: queries, cells, the mean over
    queries of each query's mean (bootstrap 95 % CI by query), failures."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    failed: dict[tuple, int] = defaultdict(int)
    for r in rows:
        arm = (r["llm"], r["mode"], r.get("refs"), r["video"])
        if r["status"] == "failed":
            failed[arm] += 1
    for r in _scored(rows):
        for kind in _kinds(r):
            groups[(r["llm"], r["mode"], r.get("refs"), r["video"], kind)].append(r)
    out = []
    for (llm, mode, refs, video, kind), group in sorted(
        groups.items(), key=lambda kv: _sort_key(kv[0])
    ):
        values = list(query_means(group).values())
        out.append(
            {
                "llm": llm,
                "mode": mode,
                "refs": refs,
                "video": video,
                "queries": kind,
                "n_queries": len(values),
                "n_cells": len(group),
                "mean_log2_comments": float(np.mean(values)),
                "ci95": bootstrap_ci(values, n_boot=n_boot, seed=seed),
                "mean_expected_comments": float(np.mean(np.exp2(values))),
                "failed": failed.get((llm, mode, refs, video), 0),
            }
        )
    return out


def query_categories(rows: list[dict[str, Any]]) -> dict[str, str]:
    """One category per query: the one PE's matcher chose (else the judge's category)."""
    out: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: r["mode"] != "pe"):  # PE rows first
        cat = r.get("category")
        if cat and r["query_id"] not in out:
            out[r["query_id"]] = str(cat)
    return out


def per_category(rows: list[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Per query category x LLM x PE arm x video: basic and PE means over the category's
    queries and the per-query paired gain. Exploratory: many small tests, Holm-adjusted
    as their own family, never part of the main one."""
    cats = query_categories(rows)
    found = pairs(rows)
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for p in found:
        groups[(cats.get(p["query_id"], "?"), p["llm"], p["refs"], p["video"])].append(p)
    out = []
    for (cat, llm, refs, video), chosen in sorted(groups.items(), key=lambda kv: _sort_key(kv[0])):
        out.append(
            {
                "category": cat,
                "llm": llm,
                "refs": refs,
                "video": video,
                "mean_basic": float(np.mean([p["basic"] for p in chosen])),
                "mean_pe": float(np.mean([p["pe"] for p in chosen])),
                "exploratory": True,
            }
            | paired_comparison([p["gain"] for p in chosen], n_boot=n_boot, seed=seed)
        )
    for row, p in zip(out, holm([r["wilcoxon_p"] for r in out]), strict=True):
        row["p_adjusted"] = p
        row["adjustment"] = ADJUSTMENT
    return out


# -- head to head ---------------------------------------------------------------------


def judge_reads(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the judge read, from the scored rows' ``judge_reads`` (a list of inputs:
    ``title``, ``category``, ``clip`` ...); ``None`` when no row says."""
    seen = [r.get("judge_reads") for r in _scored(rows) if r.get("judge_reads") is not None]
    if not seen:
        return None
    found = {str(x) for reads in seen for x in reads}
    order = {name: i for i, name in enumerate(INPUT_ORDER)}
    inputs = sorted(found, key=lambda x: (order.get(x, len(order)), x))
    return {"inputs": inputs, "pixels": bool({"cover", "clip"} & found)}


def measurable(axis: str, reads: dict[str, Any] | None) -> tuple[bool, str | None]:
    """Whether a comparison along ``axis`` can show anything under a judge that reads
    ``reads``; when not, the sentence that replaces its table. An undeclared judge is
    given the benefit of the doubt (the outputs then list no inputs)."""
    if reads is None or axis not in AXIS_CHANGES:
        return True, None
    inputs = set(reads["inputs"])
    if inputs & AXIS_CHANGES[axis]:
        return True, None
    said = " and ".join(reads["inputs"]) or "nothing the axis changes"
    return False, f"not measurable with this judge (it reads {said})"


def head_to_head(rows: list[dict[str, Any]], by: str) -> dict[str, dict[str, float]]:
    """For each query, which value of ``by`` (``llm``, ``video`` or ``arm``) produced
    its highest-scored result: each value's score for a query is its best setting's
    mean over seeds. Wins per value and query set (a query is one win, ties share it);
    values that never win are listed with 0."""
    key_of = arm_name if by == "arm" else (lambda r: r[by])
    settings: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    kinds: dict[str, str] = {}
    values: set[str] = set()
    for r in _scored(rows):
        kinds[r["query_id"]] = r["query_kind"]
        v = str(key_of(r))
        values.add(v)
        settings[(r["query_id"], v, r["llm"], arm_name(r), r["video"])].append(r)
    best: dict[str, dict[str, float]] = defaultdict(dict)
    for (q, v, *_), group in settings.items():
        mean = float(np.mean([r[SCORE] for r in group]))
        best[q][v] = max(best[q].get(v, -math.inf), mean)
    wins: dict[str, dict[str, float]] = {}
    for q, scores in best.items():
        top = max(scores.values())
        winners = [v for v, s in scores.items() if s == top]
        for kind in (kinds[q], ALL):
            table = wins.setdefault(kind, dict.fromkeys(sorted(values, key=_natural), 0.0))
            for v in winners:
                table[v] += 1 / len(winners)
    return {k: wins[k] for k in sorted(wins)}


def head_to_heads(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The three head-to-head tables; an axis the judge cannot see is a sentence."""
    reads = judge_reads(rows)
    out: dict[str, Any] = {}
    for by in ("llm", "video", "arm"):
        ok, why = measurable(by, reads)
        out[by] = head_to_head(rows, by) if ok else {"measurable": False, "reason": why}
    return out


# -- honesty and the whole summary ------------------------------------------------------


def honesty(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which ideators made the cells (failed ones included: a study whose every cell
    failed still names its LLM), and how many finished cells used no LLM."""
    from llmpopcorn.runs.honesty import ideators

    found = ideators(rows)
    return {"no_llm_cells": found["no_llm_cells"], "ideators": found["ideators"]}


def summarise(rows: list[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every table of the study, as JSON-able data."""
    main = pe_vs_basic(rows, n_boot=n_boot, seed=seed)
    return {
        "total": len(rows),
        "ok": sum(r["status"] == "ok" for r in rows),
        "scored": len(_scored(rows)),
        "failed": sum(r["status"] == "failed" for r in rows),
        "unit": "query (each arm averaged over its seeds within a query, then paired)",
        "cells": arm_means(rows, n_boot=n_boot, seed=seed),
        "attrition": attrition(rows),
        "pe_vs_basic": main,
        "multiple_comparisons": {
            "method": ADJUSTMENT_TEXT,
            "family": "PE - basic: every refs x query set x LLM x video generator",
            "tests": sum(r["wilcoxon_p"] is not None for r in main),
            "per_category": "exploratory; adjusted as a separate family",
        },
        "per_category": per_category(rows, n_boot=n_boot, seed=seed),
        "judge_reads": judge_reads(rows),
        "head_to_head": head_to_heads(rows),
        **honesty(rows),
    }
