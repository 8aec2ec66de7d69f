"""``popcorn feedback RUN_ID --comments N``: what a posted video really got."""

from __future__ import annotations

import json

import click

from llmpopcorn.cli import main


def count_option(name: str, help_text: str, required: bool = False):
    return click.option(
        f"--{name}", type=click.IntRange(min=0), required=required, default=None, help=help_text
    )


@main.command()
@click.argument("run")
@count_option("comments", "Comments the posted video got (the judge predicts these).", True)
@count_option("likes", "Likes it got (kept for later; not used by the calibration).")
@count_option("views", "Views it got (kept for later; not used by the calibration).")
@click.option("--posted", default=None, help="The day it was posted (YYYY-MM-DD).")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding the runs and store.sqlite [default ./popcorn-runs, env POPCORN_OUT].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the stored row as JSON.")
def feedback(run, comments, likes, views, posted, out, as_json) -> None:
    """Record what the video of RUN (a run id, or a run folder) got once posted.

    The outcome goes into the run store beside the run (store.sqlite), with the judge's
    prediction copied from the run's record. Recording the same run again replaces
    the counts (a later count is the better one). Then fit the judge to your posts:

    \b
      popcorn feedback 20261205-101532-b82090 --comments 240 --posted 2026-12-01
      popcorn predictor calibrate
    """
    from pathlib import Path

    from llmpopcorn.core.settings import Settings
    from llmpopcorn.runs.feedback import find_run, record_feedback
    from llmpopcorn.runs.store import Store

    folder = Path(out) if out else Settings.resolve().out_dir
    run_dir = find_run(folder, run)
    with Store(folder / "store.sqlite") as store:
        row = record_feedback(
            store, run_dir, comments=comments, likes=likes, views=views, posted=posted
        )
        posts = len(store.feedback(row["predictor"])) if row["predictor"] else 0
    if as_json:
        click.echo(json.dumps(row, sort_keys=True))
        return
    verb = "recorded" if row["new"] else "updated"
    click.echo(f"{verb}: {row['run_id']} got {comments} comments ({row['title'] or 'no title'})")
    if row["predicted_log2"] is None:
        click.echo(
            "note: this run has no score, so it cannot calibrate a judge (kept anyway)", err=True
        )
        return
    click.echo(
        f"the judge ({row['predictor']}) predicted {2 ** row['predicted_log2']:.0f} comments "
        f"(log2 {row['predicted_log2']:.2f}); {posts} post(s) with feedback for it"
    )
    click.echo("next: popcorn predictor calibrate" + (f" --out {folder}" if out else ""))
