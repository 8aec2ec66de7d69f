"""The study's files: results.csv, summary.json, summary.md and a self-contained
summary.html (tables and matplotlib charts embedded as base64 PNG).

Every file says what produced the numbers (DESIGN §4.15): a banner when any cell used no
LLM, the judge and its overlap with PE's references, and the human baseline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from llmpopcorn.core.paths import write_csv
from llmpopcorn.runs.honesty import dependent_judge_banner, named, overlap_phrase
from llmpopcorn.runs.honesty import no_llm_banner as no_llm
from llmpopcorn.study.bench import CSV_COLUMNS
from llmpopcorn.study.loop import loop_tables
from llmpopcorn.study.stats import arm_name, summarise

log = logging.getLogger(__name__)


def all_failed(summary: dict[str, Any]) -> str | None:
    """When no cell finished: how many failed, which LLM and model were asked, why."""
    if not summary["total"] or summary["ok"]:
        return None
    reasons: Counter = Counter()
    for a in summary.get("attrition", []):
        reasons.update(a["invalid_by_reason"])
    why = ", ".join(f"{k} {v}" for k, v in reasons.most_common()) or "unknown"
    asked = named(summary.get("ideators", [])) or "unknown"
    return f"all {summary['total']} cells failed (asked: {asked}; reasons: {why})"


def no_llm_banner(summary: dict[str, Any]) -> str | None:
    """The banner of every output: no cell finished (naming the LLM and model asked),
    or some finished cells used no LLM; and a judge that learned from the videos PE may
    show (run with --allow-dependent-judge)."""
    ideators = summary.get("ideators", [])
    failed = all_failed(summary)
    if failed:
        first = (
            f"NO CELL FINISHED: {failed}. There are no results to read; see the attrition "
            "table and each cell's error in results.csv."
        )
    else:
        first = no_llm(summary.get("no_llm_cells") or 0, summary["ok"], ideators, "cells")
    found = [b for b in (first, dependent_judge_banner(summary.get("independence"))) if b]
    return " ".join(found) or None


def judge_section(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which judge scored the cells, and how many PE references it already knew: by id
    (its memory) and by normalised title (its training part)."""
    pe = [r for r in rows if r["status"] == "ok" and r["mode"] == "pe"]
    shown = sum(int(r.get("refs_shown") or 0) for r in pe)
    overlap = sum(int(r.get("refs_in_judge_memory") or 0) for r in pe)
    by_title, near = (_total(pe, c) for c in ("refs_title_in_judge_data", "refs_near_judge_data"))
    methods = sorted({r["overlap_method"] for r in pe if r.get("overlap_method")})
    return {
        "predictors": sorted({str(r["predictor"]) for r in rows if r.get("predictor")}),
        "pe_pools": sorted({str(r["pe_pool"]) for r in pe if r.get("pe_pool")}),
        "references_shown": shown,
        "references_in_judge_memory": overlap,
        "references_title_in_judge_data": by_title,
        # cosine >= corpus.independence.NEAR_DUPLICATE_COSINE, exact matches included
        "references_near_judge_data": near,
        "zero_overlap": bool(pe) and overlap == 0 and not by_title,
        "overlap_method": methods,
    }


def _total(rows: list[dict[str, Any]], column: str) -> int | None:
    """The sum of ``column`` over the rows that counted it (None when none did)."""
    counted = [int(r[column]) for r in rows if r.get(column) is not None]
    return sum(counted) if counted else None


def build_summary(
    rows: list[dict[str, Any]],
    *,
    baseline: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    n_boot: int = 2000,
) -> dict[str, Any]:
    summary = summarise(rows, n_boot=n_boot)
    summary["judge"] = judge_section(rows)
    if baseline is not None:
        summary["human_baseline"] = baseline
    summary.update(extra or {})
    summary["banner"] = no_llm_banner(summary)  # reads extra's independence block too
    return summary


def write_reports(
    rows: list[dict[str, Any]],
    out_dir: str | Path,
    *,
    baseline: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    n_boot: int = 2000,
    plots: bool = True,
) -> dict[str, Any]:
    """Write results.csv, summary.json, summary.md and summary.html into ``out_dir``."""
    out_dir = Path(out_dir)
    summary = build_summary(rows, baseline=baseline, extra=extra, n_boot=n_boot)
    with open(out_dir / "results.csv", "w", newline="", encoding="utf-8") as fh:
        write_csv(fh, CSV_COLUMNS, rows)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out_dir / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    charts = make_plots(rows, summary) if plots else {}
    (out_dir / "summary.html").write_text(summary_html(summary, charts), encoding="utf-8")
    return summary


# -- text -----------------------------------------------------------------------------


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"


def _p(p) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def _wins(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _refs(r) -> str:
    return "" if r is None else str(r)


def _attrition_of(summary: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    return {(a["llm"], a["arm"], a["video"]): a for a in summary.get("attrition", [])}


def _valid(a: dict[str, Any] | None) -> str:
    return "n/a" if a is None else f"{a['valid']}/{a['attempted']}"


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"


def _gain(c: dict[str, Any]) -> str:
    if c.get("mean_gain_log2") is None:
        return "n/a"
    return f"{c['mean_gain_log2']:+.3f} {_ci(c['ci95'])}"


Table = tuple[str, list[str], list[list[str]], str | None]


def tables(summary: dict[str, Any]) -> list[Table]:
    """(title, header, rows, note) of every table, shared by the Markdown and the HTML;
    a table the judge cannot measure has no rows, only its note."""
    out: list[Table] = []
    out.append(
        (
            "Predicted popularity per LLM x mode (log2 comments; mean over queries of each "
            "query's mean over seeds, bootstrap 95 % CI by query)",
            ["llm", "mode", "refs", "video", "queries", "n queries", "n cells", "mean log2",
             "95 % CI", "mean comments", "failed"],
            [
                [
                    c["llm"], c["mode"], _refs(c["refs"]), c["video"], c["queries"],
                    str(c["n_queries"]), str(c["n_cells"]), f"{c['mean_log2_comments']:.3f}",
                    _ci(c["ci95"]), f"{c['mean_expected_comments']:.1f}", str(c["failed"]),
                ]
                for c in summary["cells"]
            ],
            None,
        )
    )  # fmt: skip
    attr = _attrition_of(summary)
    mc = summary.get("multiple_comparisons") or {}
    out.append(
        (
            "PE - basic, paired by query (each arm averaged over its seeds within a query; "
            "Wilcoxon signed-rank, two-sided; p adjusted over the family with "
            f"{mc.get('method', 'Holm')})",
            ["llm", "refs", "video", "queries", "pairs (queries)", "mean gain (log2)",
             "95 % CI", "PE win rate", "Wilcoxon p", "p adjusted", "PE valid", "basic valid",
             "worst case: failures = arm's worst score"],
            [
                [
                    c["llm"], _refs(c["refs"]), c["video"], c["queries"], str(c["pairs"]),
                    "n/a" if c["mean_gain_log2"] is None else f"{c['mean_gain_log2']:+.3f}",
                    _ci(c["ci95"]),
                    "n/a" if c["win_rate"] is None else f"{c['win_rate']:.1%}",
                    _p(c["wilcoxon_p"]), _p(c.get("p_adjusted")),
                    _valid(attr.get((c["llm"], c["arm"], c["video"]))),
                    _valid(attr.get((c["llm"], c.get("control", "basic"), c["video"]))),
                    _gain(c["worst_case"]) + f" (p {_p(c['worst_case']['wilcoxon_p'])})",
                ]
                for c in summary["pe_vs_basic"]
            ],
            f"{mc.get('tests', 0)} tests in the family ({mc.get('family', '')}). The valid "
            "columns are cells valid / attempted; the worst-case column counts every failed "
            "cell as its arm's lowest score.",
        )
    )  # fmt: skip
    out.append(
        (
            "Attrition per arm: cells attempted, valid, invalid by reason",
            ["llm", "arm", "video", "attempted", "valid", "invalid", "invalid by reason",
             "not scored", "unfinished", "replies re-asked, by reason"],
            [
                [
                    a["llm"], a["arm"], a["video"], str(a["attempted"]), str(a["valid"]),
                    str(a["invalid"]), _reasons(a["invalid_by_reason"]), str(a["not_scored"]),
                    str(a["unfinished"]), _reasons(a["rejected_replies_by_reason"]),
                ]
                for a in summary.get("attrition", [])
            ],
            None,
        )
    )  # fmt: skip
    out += loop_tables(summary)  # --arms ...,refine: both loop judges side by side
    for by, label in (("llm", "LLM"), ("video", "video generator"), ("arm", "mode (and refs)")):
        wins = summary["head_to_head"].get(by, {})
        title = (
            f"Head to head: which {label} produced each query's highest-scored result "
            "(seeds averaged within a query; one win per query, ties shared)"
        )
        if wins.get("measurable") is False:
            out.append((title, [], [], wins["reason"]))
            continue
        values = list(next(iter(wins.values()), {}))  # in the statistics' order
        body = [[kind, *(_wins(t.get(v, 0)) for v in values)] for kind, t in wins.items()]
        out.append((title, ["queries", *values], body, None))
    out.append(
        (
            "Per query category (exploratory: many small tests; the category PE matched; "
            "paired PE - basic by query; p adjusted with Holm within this family only)",
            ["category", "llm", "refs", "video", "pairs", "mean basic", "mean PE", "gain",
             "Wilcoxon p", "p adjusted"],
            [
                [
                    c["category"], c["llm"], _refs(c["refs"]), c["video"], str(c["pairs"]),
                    f"{c['mean_basic']:.3f}", f"{c['mean_pe']:.3f}",
                    f"{c['mean_gain_log2']:+.3f}", _p(c["wilcoxon_p"]), _p(c.get("p_adjusted")),
                ]
                for c in summary["per_category"]
            ],
            None,
        )
    )  # fmt: skip
    return out


def judge_lines(summary: dict[str, Any]) -> list[str]:
    j = summary["judge"]
    lines = [f"Judge (predictor): {', '.join(j['predictors']) or 'none (not scored)'}."]
    reads = summary.get("judge_reads")
    if reads:
        lines.append(
            f"The judge reads {' and '.join(reads['inputs'])}"
            + ("" if reads["pixels"] else " (no pixels: the cover and clip cannot move a score)")
            + "."
        )
    if j["references_shown"]:
        how = "; ".join(j["overlap_method"])
        pool = ", ".join(j["pe_pools"]) or "all"
        titles = j.get("references_title_in_judge_data")
        by_title = "not checked" if titles is None else f"{titles} of {j['references_shown']}"
        near = j.get("references_near_judge_data")
        near = "not checked" if near is None else f"{near} of {j['references_shown']}"
        counts = (
            f"by video id {j['references_in_judge_memory']} of {j['references_shown']} "
            f"references shown to the ideator are in the judge's memory; by normalised title "
            f"{by_title} equal a title the judge was trained on; {near} are near-duplicates "
            f"of a video it learned from (checked by {how}; PE pool: {pool})"
        )
        if j["zero_overlap"]:
            lines.append(f"Zero overlap: {counts}.")
        else:
            lines.append(
                f"Overlap: {counts}: PE may be rewarded for copying what the judge knows. "
                "Use an independent judge (--predictor judge with --pe-pool reference)."
                if j["references_in_judge_memory"]
                else f"Overlap by content only: {counts}. The ids are disjoint; these "
                "references repeat a title the judge learned from."
            )
    facts = summary.get("independence") or {}
    if facts.get("checked"):
        lines.append(
            "Checked before the study, against each pool the arms draw references from: "
            f"{overlap_phrase(facts)}"
            + (" (run with --allow-dependent-judge)." if facts.get("dependent") else ".")
        )
    b = summary.get("human_baseline")
    if b:
        lines.append(
            f"Human baseline: for each query the {b['k']} nearest real videos of the "
            f"'{b['part']}' pool ({b['videos']} videos, {b['distinct_videos']} distinct): true "
            f"mean log2 comments {b['true_mean_log2']:.3f}"
            + (
                f"; the judge predicts {b['predicted_mean_log2']:.3f} for them (MAE "
                f"{b['mae_log2']:.3f}, Spearman {_num(b['spearman'])}; "
                f"{b['videos_in_predictor_memory']} of them in its memory"
                + (
                    f", {b['videos_title_in_predictor_data']} share a title with its training part"
                    if b.get("videos_title_in_predictor_data") is not None
                    else ""
                )
                + (
                    f", {b['videos_near_predictor_data']} are near-duplicates of a video it "
                    f"learned from (cosine >= {b['near_duplicate_cosine']})"
                    if b.get("videos_near_predictor_data") is not None
                    else ""
                )
                + ")."
                if b.get("predictor")
                else "."
            )
        )
    return lines


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = ["# LLMPopcorn study", ""]
    if summary.get("banner"):
        lines += [f"> **{summary['banner']}**", ""]
    lines.append(
        f"{summary['ok']} of {summary['total']} cells finished, {summary['scored']} scored, "
        f"{summary['failed']} failed."
    )
    if summary.get("note"):
        lines.append(summary["note"])
    lines += ["", *judge_lines(summary)]
    for title, header, body, note in tables(summary):
        lines += ["", f"## {title}", ""]
        if header:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in body]
        if note:
            lines += ["", note] if header else [note]
    return "\n".join(lines) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
    "padding:.25em .5em;text-align:left}.banner{background:#fff3cd;border:2px solid #d39e00;"
    "padding:.75em;font-weight:bold}img{max-width:100%}"
)


def summary_html(summary: dict[str, Any], charts: dict[str, bytes]) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>LLMPopcorn study</title><style>{_CSS}</style></head><body>",
        "<h1>LLMPopcorn study</h1>",
    ]
    if summary.get("banner"):
        parts.append(f"<p class='banner' role='alert'>{e(summary['banner'])}</p>")
    parts.append(
        f"<p>{summary['ok']} of {summary['total']} cells finished, {summary['scored']} scored, "
        f"{summary['failed']} failed.</p>"
    )
    if summary.get("note"):
        parts.append(f"<p>{e(summary['note'])}</p>")
    parts += [f"<p>{e(line)}</p>" for line in judge_lines(summary)]
    for name, png in charts.items():
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        parts.append(
            f"<figure><img src='{uri}' alt='{e(name)}'><figcaption>{e(name)}</figcaption></figure>"
        )
    for title, header, body, note in tables(summary):
        parts.append(f"<h2>{e(title)}</h2>")
        if header:
            head = "".join(f"<th>{e(h)}</th>" for h in header)
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in body)
            parts.append(f"<table><tr>{head}</tr>{rows}</table>")
        if note:
            parts.append(f"<p>{e(note)}</p>")
    parts.append("</body></html>")
    return "".join(parts)


# -- charts ---------------------------------------------------------------------------


def make_plots(rows: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, bytes]:
    """Three PNG charts; none (with a log line) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("no charts in summary.html: pip install 'llmpopcorn[study]' (matplotlib)")
        return {}
    charts = {}
    for title, draw in (
        ("Mean predicted log2 comments per LLM x mode, with bootstrap 95 % CI", _means_chart),
        ("Paired per query: basic -> PE (each query's mean over seeds)", _slope_chart),
        ("Score distributions against the human baseline", _distribution_chart),
    ):
        fig = draw(plt, rows, summary)
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        charts[title] = buf.getvalue()
    return charts


def _means_chart(plt, rows, summary):
    cells = [c for c in summary["cells"] if c["queries"] != "all"]
    if not cells:
        return None
    arms = sorted(
        {(c["llm"], c["mode"], c["refs"], c["video"]) for c in cells},
        key=lambda a: (a[0], a[1] == "pe", a[2] or 0, a[3]),
    )
    kinds = sorted({c["queries"] for c in cells})
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(arms) + 2), 3.5))
    width = 0.8 / max(len(kinds), 1)
    for j, kind in enumerate(kinds):
        for i, arm in enumerate(arms):
            c = next(
                (
                    c
                    for c in cells
                    if (c["llm"], c["mode"], c["refs"], c["video"]) == arm and c["queries"] == kind
                ),
                None,
            )
            if c is None:
                continue
            lo, hi = c["ci95"] or (c["mean_log2_comments"],) * 2
            ax.errorbar(
                i + (j - (len(kinds) - 1) / 2) * width,
                c["mean_log2_comments"],
                yerr=[[c["mean_log2_comments"] - lo], [hi - c["mean_log2_comments"]]],
                fmt="o",
                color=f"C{j}",
                capsize=3,
                label=kind if i == 0 else None,
            )
    labels = [
        f"{llm}\n{'basic' if mode != 'pe' else f'pe@{refs}'}\n{video}"
        for llm, mode, refs, video in arms
    ]
    ax.set_xticks(range(len(arms)), labels, fontsize=8)
    ax.set_ylabel("predicted log2 comments")
    ax.legend(fontsize=8)
    return fig


def _slope_chart(plt, rows, summary):
    from llmpopcorn.study.stats import pairs

    found = pairs(rows)  # one pair per query: each arm's mean over its seeds
    if not found:
        return None
    panels = sorted(
        {(p["llm"], p["refs"], p["video"]) for p in found}, key=lambda a: (a[0], a[1] or 0, a[2])
    )[:6]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3 * len(panels) + 1, 3.5), sharey=True, squeeze=False
    )
    for ax, panel in zip(axes[0], panels, strict=False):
        chosen = [p for p in found if (p["llm"], p["refs"], p["video"]) == panel]
        for p in chosen:
            gain = p["gain"]
            color = "C2" if gain > 0 else "C3" if gain < 0 else "0.6"
            ax.plot([0, 1], [p["basic"], p["pe"]], color=color, alpha=0.35, lw=0.8)
        basic_mean = sum(p["basic"] for p in chosen) / len(chosen)
        pe_mean = sum(p["pe"] for p in chosen) / len(chosen)
        ax.plot([0, 1], [basic_mean, pe_mean], color="k", lw=2.5, label="mean")
        ax.set_xticks([0, 1], ["basic", f"pe@{panel[1]}"])
        ax.set_title(f"{panel[0]} / {panel[2]}", fontsize=9)
    axes[0][0].set_ylabel("predicted log2 comments (query mean over seeds)")
    axes[0][0].legend(fontsize=7)
    return fig


def _distribution_chart(plt, rows, summary):
    import numpy as np

    scored = [r for r in rows if r["status"] == "ok" and r.get("log2_comments") is not None]
    if not scored:
        return None
    series = []
    arms = {(r["llm"], arm_name(r), r.get("refs") or 0) for r in scored}
    for arm in sorted(arms, key=lambda a: (a[0], a[1] != "basic", a[2])):
        values = [r["log2_comments"] for r in scored if (r["llm"], arm_name(r)) == arm[:2]]
        series.append((f"{arm[0]} {arm[1]} (judge on ideas)", values, "step", "-"))
    b = summary.get("human_baseline")
    if b:
        true = [v for e in b["per_query"] for v in e["true_log2"]]
        series.append(("real videos nearest the queries (true)", true, "stepfilled", "-"))
        if b.get("predictor"):
            pred = [v for e in b["per_query"] for v in e["predicted_log2"]]
            series.append(("real videos (judge)", pred, "step", "--"))
    every = np.concatenate([np.asarray(v, dtype=float) for _, v, _, _ in series])
    bins = np.linspace(every.min(), every.max(), 31) if every.max() > every.min() else 10
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, (label, values, kind, style) in enumerate(series):
        human = label.startswith("real")
        ax.hist(
            values,
            bins=bins,
            density=True,
            histtype=kind,
            linestyle=style,
            alpha=0.25 if kind == "stepfilled" else 1.0,
            color="k" if human else f"C{i}",
            label=f"{label}, n={len(values)}",
        )
    ax.set_xlabel("log2 comments")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return fig
