"""``popcorn runs``: list, show and export what the run store holds (batches)."""

from __future__ import annotations

import json
import sys

import click

from llmpopcorn.cli import main

_out = click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding store.sqlite [default ./popcorn-runs, env POPCORN_OUT].",
)


def _store(out: str | None):
    from pathlib import Path

    from llmpopcorn.core.errors import DataError
    from llmpopcorn.core.settings import Settings
    from llmpopcorn.runs.store import Store

    folder = Path(out) if out else Settings.resolve().out_dir
    path = folder / "store.sqlite"
    if not path.exists():
        raise DataError(
            f"no run store at {path}",
            "pass --out with the folder a batch wrote (it holds store.sqlite)",
        )
    return Store(path)


@main.group("runs")
def runs_group() -> None:
    """Batches in the run store: list them, show one, export its items."""


@runs_group.command("list")
@_out
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(out, as_json) -> None:
    """One line per batch: id, queries x variants, items by status."""
    from llmpopcorn.runs.batch import batch_summaries
    from llmpopcorn.study.bench import CELL

    with _store(out) as store:
        rows = batch_summaries(store)
        studies = store.groups(CELL)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        cells = sum(studies.values())
        click.echo(
            "no batches yet"
            + (
                f"; this store holds {cells} study cell(s) in {len(studies)} group(s) of "
                "settings: their summary is in summary.md / summary.html beside it "
                "(rerun the popcorn bench command to refresh it); preference pairs: "
                + ", ".join(f"popcorn runs export {g} --pairs" for g in sorted(studies))
                if cells
                else ""
            ),
            err=True,
        )
        return
    for r in rows:
        click.echo(
            f"{r['batch']}  {r['queries']} queries x {r['variants']}  {r['mode']:<5} "
            f"{r['llm']:<10} ok {r['ok']}  failed {r['failed']}  pending "
            f"{r['pending'] + r['not_started']}  running {r['running']}  {r['updated'] or ''}"
        )


@runs_group.command("show")
@click.argument("batch_id")
@_out
def show_command(batch_id, out) -> None:
    """The items of BATCH_ID: status, rank among the query's variants, score, title."""
    from llmpopcorn.runs.batch import batch_rows, check_batch_id, open_batch

    check_batch_id(batch_id)
    with _store(out) as store:
        open_batch(store, batch_id)
        rows = batch_rows(store, batch_id)
    for r in rows:
        score = "" if r["score"] is None else f"{r['score']:.2f}"
        click.echo(
            f"{r['status']:<8} v{r['variant']} seed {r['seed']:<5} rank {r['rank'] or '-':<3} "
            f"log2 {score:<6} {r['title'] or r['error'] or ''}  [{r['query'][:50]}]"
        )


@runs_group.command("export")
@click.argument("batch_id")
@_out
@click.option("--csv", "fmt", flag_value="csv", default=True, help="CSV (default).")
@click.option("--json", "fmt", flag_value="json", help="JSON list of rows.")
@click.option(
    "--pairs",
    "fmt",
    flag_value="pairs",
    help="Preference pairs as JSONL for TRL's DPO trainer (prompt, chosen, rejected, both "
    "loop judges' scores, margin) from a batch or a study (study-... id, see `runs list`).",
)
@click.option(
    "--min-margin",
    type=click.FloatRange(min=0),
    default=None,
    help="--pairs: least reward-judge difference (log2 comments) for a pair [default 0.2].",
)
@click.option(
    "--drop-disagreeing",
    is_flag=True,
    help="--pairs: leave out pairs the evaluation judge orders the other way (by default they "
    "are kept and marked: dropping them lets the evaluation judge pick the training data).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File [default stdout].")
def export_command(batch_id, out, fmt, min_margin, drop_disagreeing, output) -> None:
    """One row per item of BATCH_ID: query, mode, variant, seed, status, rank, title,
    score (predicted log2 comments), expected_comments, run_dir, error...; with --pairs,
    preference pairs from a batch or a study."""
    from llmpopcorn.core.paths import write_csv
    from llmpopcorn.runs.batch import COLUMNS, batch_rows, check_batch_id, open_batch

    if fmt == "pairs":
        _export_pairs(batch_id, out, output, min_margin, drop_disagreeing)
        return
    check_batch_id(batch_id)
    with _store(out) as store:
        open_batch(store, batch_id)
        rows = batch_rows(store, batch_id)
    fh = open(output, "w", newline="", encoding="utf-8") if output else sys.stdout
    try:
        if fmt == "json":
            fh.write(json.dumps(rows, indent=2) + "\n")
        else:
            write_csv(fh, COLUMNS, rows)
    finally:
        if output:
            fh.close()


def _export_pairs(group: str, out, output, min_margin, drop_disagreeing) -> None:
    from llmpopcorn.core.errors import ConfigError, DataError
    from llmpopcorn.core.settings import Settings
    from llmpopcorn.pipeline.refine import loop_judges
    from llmpopcorn.runs.batch import KIND, check_batch_id
    from llmpopcorn.study.bench import CELL
    from llmpopcorn.study.pairs import MIN_MARGIN, pairs_summary, preference_pairs

    kind = CELL if group.startswith("study-") else KIND
    if kind == KIND:
        check_batch_id(group)
    with _store(out) as store:
        items = store.items(kind=kind, group=group)
    if not items:
        raise ConfigError(
            f"no batch or study {group} in this store",
            "see `popcorn runs list --out DIR` for the ids (batch-... or study-...)",
        )
    lines = list(
        preference_pairs(
            items,
            loop_judges(Settings.resolve()),
            min_margin=MIN_MARGIN if min_margin is None else min_margin,
            drop_disagreeing=drop_disagreeing,
        )
    )
    if not lines:
        raise DataError(
            f"{group} gives no preference pair",
            "pairs need two or more distinct ideas of a query whose reward-judge scores differ "
            "by --min-margin: use --variants N, several arms or seeds, or --refine K",
        )
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    counts = pairs_summary(lines)
    click.echo(
        f"{counts['pairs']} pairs from {counts['queries']} queries; the evaluation judge "
        f"agrees on {counts['judges_agree']} and disagrees on {counts['judges_disagree']}"
        + (" (dropped)" if drop_disagreeing else " (kept, marked judges_agree: false)"),
        err=True,
    )
