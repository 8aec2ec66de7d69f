"""The paper's study as one command: queries x LLMs x basic/PE x video backends x seeds.

Every cell is one :meth:`Pipeline.make` run whose predicted popularity (log2 of the
comment count) is stored in a SQLite :class:`~llmpopcorn.store.Store`; a rerun
skips finished cells, so an interrupted study resumes where it stopped. The
summary reports, per cell and per query kind (abstract / concrete), the mean
predicted log2 comments with a bootstrap 95 % confidence interval, and PE against
basic mode paired by query, LLM, video backend and seed: the mean gain, its
interval and the win rate (ties count half).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataError, MissingExtraError, PopcornError
from .pipeline import Pipeline
from .settings import Settings
from .store import CellKey, Store

log = logging.getLogger(__name__)

QUERY_KINDS = ("abstract", "concrete")
#: errors that would fail every cell alike: stop the study instead of repeating them
SETUP_ERRORS = (ConfigError, DataError, MissingExtraError)


@dataclass(frozen=True)
class BenchQuery:
    query_id: str
    kind: str
    text: str


@dataclass
class StudyPlan:
    queries: list[BenchQuery]
    llms: list[str]
    modes: list[str] = field(default_factory=lambda: ["basic", "pe"])
    videos: list[str] = field(default_factory=lambda: ["draft"])
    seeds: list[int] = field(default_factory=lambda: [42])

    @property
    def size(self) -> int:
        return (
            len(self.queries)
            * len(self.llms)
            * len(self.modes)
            * len(self.videos)
            * len(self.seeds)
        )


def load_queries(
    data_dir: str | Path | None, kinds: Sequence[str] = QUERY_KINDS, limit: int | None = None
) -> list[BenchQuery]:
    """The benchmark queries from ``<data>/prompts/<kind>_prompts.txt`` (one a line)."""
    if data_dir is None:
        raise DataError(
            "no data directory is set",
            "pass --data DIR or set POPCORN_DATA to the folder holding prompts/*_prompts.txt",
        )
    queries: list[BenchQuery] = []
    for kind in kinds:
        if kind not in QUERY_KINDS:
            raise DataError(f"unknown query kind '{kind}'", f"use one of: {', '.join(QUERY_KINDS)}")
        path = Path(data_dir).expanduser() / "prompts" / f"{kind}_prompts.txt"
        if not path.exists():
            raise DataError(
                f"query file not found: {path}",
                "point --data / POPCORN_DATA at the folder holding prompts/abstract_prompts.txt "
                "and prompts/concrete_prompts.txt",
            )
        lines = [" ".join(x.split()) for x in path.read_text(encoding="utf-8").splitlines()]
        lines = [x for x in lines if x]
        for i, text in enumerate(lines[:limit] if limit else lines, start=1):
            queries.append(BenchQuery(f"{kind}-{i:03d}", kind, text))
    if not queries:
        raise DataError("no benchmark queries found", "check the prompts files")
    return queries


def run_study(
    plan: StudyPlan,
    settings: Settings,
    out_dir: str | Path,
    *,
    retry_failed: bool = True,
    on_cell: Callable[[CellKey, str], None] | None = None,
    pipeline_factory: Callable[[Settings], Pipeline] = Pipeline,
) -> Path:
    """Run every cell not yet finished; return the store's path.

    A failing cell (an LLM that keeps answering badly, a render error) is recorded
    and the study goes on. A problem with the setup itself (a bad setting, missing
    data, a missing extra) would fail every cell alike: it is recorded for the cell
    and stops the study. An interrupt marks the cell in flight and stops.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store_path = out_dir / "store.sqlite"
    with Store(store_path) as store:
        for llm, mode, video in itertools.product(plan.llms, plan.modes, plan.videos):
            cell_settings = settings.model_copy(
                update={"llm": llm, "mode": mode, "video": video, "out_dir": out_dir / "runs"}
            )
            pipeline = pipeline_factory(cell_settings)
            for query, seed in itertools.product(plan.queries, plan.seeds):
                key = CellKey(query.query_id, llm, mode, video, seed)
                status = store.status(key)
                if status == "ok" or (status == "failed" and not retry_failed):
                    if on_cell:
                        on_cell(key, "skipped")
                    continue
                _run_cell(store, pipeline, key, query, seed)
                if on_cell:
                    on_cell(key, store.status(key) or "")
    return store_path


def _run_cell(store: Store, pipeline: Pipeline, key: CellKey, query: BenchQuery, seed: int) -> None:
    store.start(key, query.kind, query.text)
    started = time.perf_counter()
    try:
        record = pipeline.make(query.text, seed=seed)
    except PopcornError as exc:
        log.warning("cell %s failed: %s", key, exc)
        store.finish(key, status="failed", error=str(exc), seconds=time.perf_counter() - started)
        if isinstance(exc, SETUP_ERRORS):
            raise
        return
    except KeyboardInterrupt:
        store.finish(
            key, status="failed", error="interrupted", seconds=time.perf_counter() - started
        )
        raise
    score = record.score
    store.finish(
        key,
        status="ok",
        run_dir=record.run_dir,
        title=record.idea.title if record.idea else None,
        log2_comments=score.log2_comments if score else None,
        expected_comments=score.expected_comments if score else None,
        seconds=time.perf_counter() - started,
    )


# -- statistics -----------------------------------------------------------------------


def bootstrap_ci(
    values: Sequence[float], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
):
    """Percentile bootstrap interval of the mean (``None`` for fewer than 2 values)."""
    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(n_boot, len(data)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarise(rows: list[dict], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Per-cell means with intervals, and paired PE-vs-basic gains and win rates."""
    scored = [r for r in rows if r["status"] == "ok" and r["log2_comments"] is not None]
    cells: dict[tuple, list[float]] = defaultdict(list)
    for r in scored:
        for kind in (r["query_kind"], "all"):
            cells[(r["llm"], r["mode"], r["video"], kind)].append(r["log2_comments"])
    failed = defaultdict(int)
    for r in rows:
        if r["status"] != "ok":
            failed[(r["llm"], r["mode"], r["video"])] += 1
    cell_rows = []
    for (llm, mode, video, kind), values in sorted(cells.items()):
        cell_rows.append(
            {
                "llm": llm,
                "mode": mode,
                "video": video,
                "queries": kind,
                "n": len(values),
                "mean_log2_comments": float(np.mean(values)),
                "ci95": bootstrap_ci(values, n_boot=n_boot, seed=seed),
                "mean_expected_comments": float(np.mean(np.exp2(values))),
                "failed": failed.get((llm, mode, video), 0),
            }
        )
    by_key = {(r["query_id"], r["llm"], r["video"], r["seed"], r["mode"]): r for r in scored}
    pairs: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for (qid, llm, video, seed_, mode), r in by_key.items():
        if mode != "pe":
            continue
        basic = by_key.get((qid, llm, video, seed_, "basic"))
        if basic is None:
            continue
        for kind in (r["query_kind"], "all"):
            pairs[(llm, video, kind)].append((r["log2_comments"], basic["log2_comments"]))
    comparisons = []
    for (llm, video, kind), values in sorted(pairs.items()):
        pe, basic = np.array(values).T
        diff = pe - basic
        comparisons.append(
            {
                "llm": llm,
                "video": video,
                "queries": kind,
                "pairs": len(diff),
                "mean_gain_log2": float(diff.mean()),
                "ci95": bootstrap_ci(diff, n_boot=n_boot, seed=seed),
                "pe_win_rate": float(((diff > 0) + 0.5 * (diff == 0)).mean()),
            }
        )
    return {
        "cells": cell_rows,
        "pe_vs_basic": comparisons,
        "total": len(rows),
        "ok": sum(r["status"] == "ok" for r in rows),
        "scored": len(scored),
    }


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# LLMPopcorn study",
        "",
        f"{summary['ok']} of {summary['total']} cells finished, {summary['scored']} scored.",
        "",
        "## Predicted popularity per cell (log2 comments, 95 % bootstrap CI)",
        "",
        "| llm | mode | video | queries | n | mean log2 | 95 % CI | mean comments | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["cells"]:
        lines.append(
            f"| {c['llm']} | {c['mode']} | {c['video']} | {c['queries']} | {c['n']} | "
            f"{c['mean_log2_comments']:.3f} | {_ci(c['ci95'])} | "
            f"{c['mean_expected_comments']:.1f} | "
            f"{c['failed']} |"
        )
    lines += [
        "",
        "## PE against basic mode (paired by query, LLM, video backend and seed)",
        "",
        "| llm | video | queries | pairs | mean gain (log2) | 95 % CI | PE win rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in summary["pe_vs_basic"]:
        lines.append(
            f"| {c['llm']} | {c['video']} | {c['queries']} | {c['pairs']} | "
            f"{c['mean_gain_log2']:+.3f} | {_ci(c['ci95'])} | {c['pe_win_rate']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def write_reports(store_path: Path, out_dir: Path, *, n_boot: int = 2000) -> dict[str, Any]:
    """Write results.csv, summary.json and summary.md next to the store."""
    with Store(store_path) as store:
        rows = store.rows()
    summary = summarise(rows, n_boot=n_boot)
    out_dir = Path(out_dir)
    if rows:
        with open(out_dir / "results.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out_dir / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    return summary
