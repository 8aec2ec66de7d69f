"""``popcorn batch``: a file of queries x N variants, concurrently, resumable.

The batch id is printed first on stdout, on its own line, then a progress bar (done,
failed, rate, ETA) goes to stderr; at the end a table of the items (best variant of
each query first) goes to stdout. The library is :mod:`llmpopcorn.runs.batch`.
"""

from __future__ import annotations

import json
import sys
import time

import click

from llmpopcorn.cli import main
from llmpopcorn.cli.options import (
    execution_options,
    options_for,
    setting_option,
    settings_from,
)

# --out: the batch's own (the folder holding store.sqlite)
_shared = options_for("common", "llm", "pe", "render", exclude=("out_dir",))


def format_progress(p, width: int = 24) -> str:
    finished = p.done + p.failed
    filled = int(width * finished / p.total) if p.total else width
    eta = p.eta
    eta_text = "--:--" if eta is None else time.strftime("%M:%S", time.gmtime(eta))
    if eta is not None and eta >= 3600:
        eta_text = f"{eta / 3600:.1f} h"
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {finished}/{p.total}  "
        f"done {p.done}  failed {p.failed}  running {p.running}  "
        f"{p.rate:.2f} items/s  ETA {eta_text}"
    )


class ProgressBar:
    """Redraws one line on a terminal; elsewhere prints a line at most every few seconds."""

    def __init__(self, stream=None, every: float = 5.0):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.1 if self.tty else every
        self._last = 0.0
        self._last_text = ""

    def __call__(self, progress) -> None:
        now = time.monotonic()
        final = progress.done + progress.failed >= progress.total or progress.running == 0
        if now - self._last < self.every and not final:
            return
        text = format_progress(progress)
        if text == self._last_text:
            return
        self._last, self._last_text = now, text
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last_text:
            self.stream.write("\n")
            self.stream.flush()


@main.command("batch")
@click.argument("queries_file", required=False, type=click.Path(dir_okay=False))
@execution_options
@setting_option("variants")
@setting_option("refine")
@setting_option("render")
@setting_option("score")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding store.sqlite and the batches' run folders [default ./popcorn-runs, "
    "env POPCORN_OUT].",
)
@click.option(
    "--resume",
    "resume",
    default=None,
    metavar="BATCH_ID",
    help="Finish an interrupted batch (the same command with the same file does it too).",
)
@click.option(
    "--keep-failed", is_flag=True, help="On resume, do not retry items that failed before."
)
@setting_option("llm_rpm")
@setting_option("max_batch_llm_calls")
@setting_option("max_batch_cost")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON.")
@_shared
def batch_command(
    queries_file,
    variants,
    concurrency,
    render_slots,
    render,
    score,
    out,
    resume,
    keep_failed,
    executor,
    address,
    as_json,
    **params,
) -> None:
    """Run every query of QUERIES_FILE (one a line; # comments) x --variants ideas.

    Items run concurrently; each is a run folder under OUT/<batch id>/. A failing item
    is recorded and the batch goes on. After Ctrl-C or a kill, `popcorn batch --resume
    ID` finishes the rest (nothing is redone). Results: `popcorn runs export ID --csv`.
    """
    from llmpopcorn.core.errors import ConfigError, PopcornError
    from llmpopcorn.runs.batch import batch_rows, check_batch_id, read_queries, run_batch
    from llmpopcorn.runs.honesty import NO_LLM_MARK, ideators, no_llm_banner
    from llmpopcorn.runs.store import Store

    if bool(queries_file) == bool(resume):
        raise ConfigError(
            "pass a query file or --resume BATCH_ID",
            "e.g. popcorn batch queries.txt --variants 2, or popcorn batch --resume batch-...",
        )
    if resume:
        check_batch_id(resume)
    queries = read_queries(queries_file) if queries_file else None
    settings = settings_from(
        params,
        render=render,
        score=score,
        out_dir=out,
    )
    bar = ProgressBar()
    started: dict = {}

    def on_start(run) -> None:
        started["id"] = run.batch_id
        click.echo(run.batch_id)  # first, on its own line
        sys.stdout.flush()
        if run.skipped:
            click.echo(f"note: {run.skipped} item(s) finished before are kept", err=True)

    try:
        run = run_batch(
            queries,
            settings,
            variants=variants,
            concurrency=concurrency,
            render_slots=render_slots,
            executor=executor,
            address=address,
            resume=resume,
            retry_failed=not keep_failed,
            on_start=on_start,
            on_progress=bar,
        )
    except KeyboardInterrupt:
        bar.close()
        if "id" in started:
            click.echo(
                f"note: stopped; finished items are kept. Resume with: popcorn batch --resume "
                f"{started['id']} --out {settings.out_dir}",
                err=True,
            )
        raise
    bar.close()
    with Store(run.store_path) as store:
        rows = batch_rows(store, run.batch_id)
    p = run.progress
    found = ideators(rows)  # results of the offline stand-in are labelled as the study's
    banner = no_llm_banner(found["no_llm_cells"], found["finished"], found["ideators"], "items")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "batch": run.batch_id,
                    "store": str(run.store_path),
                    "items": p.total,
                    "done": p.done,
                    "failed": p.failed,
                    "paused": p.paused,
                    "computed": p.computed,
                    "seconds": round(run.seconds, 3),
                    "executor": run.executor,
                    "pause_reason": run.pause_reason,
                    "banner": banner,
                    "no_llm_items": found["no_llm_cells"],
                    "ideators": found["ideators"],
                },
                indent=2,
            )
        )
    else:
        for row in rows:
            if row["status"] == "ok":
                score = "" if row["score"] is None else f"{2 ** row['score']:8.1f} comments"
                rank = f"#{row['rank']}" if row["rank"] else "  "
                mark = f"  {NO_LLM_MARK}" if row["is_llm"] is False else ""
                click.echo(f"{rank:>3} {score:>17}  {row['title']}  [{row['query'][:40]}]{mark}")
            else:
                click.echo(f"  - {row['status']:>17}  {row['query'][:40]}: {row['error'] or ''}")
        click.echo(
            f"{p.done} done, {p.failed} failed of {p.total} in {run.seconds:.1f} s; "
            f"export: popcorn runs export {run.batch_id} --out {run.runs_dir} --csv"
        )
        if banner:
            click.echo(banner)
    if run.busy:
        click.echo(
            f"note: {run.busy} item(s) are being run by another live process on this store; "
            "rerun this command after it ends to see them here",
            err=True,
        )
    resume_cmd = f"popcorn batch --resume {run.batch_id} --out {run.runs_dir}"
    if run.pause_reason:
        raise PopcornError(
            f"the batch paused with {p.paused} item(s) left: {run.pause_reason}",
            f"fix it (top up the key's quota, raise the cap), then: {resume_cmd}",
        )
    if run.setup_error:
        raise PopcornError(
            f"the batch stopped: {run.setup_error}", f"fix the setup, then: {resume_cmd}"
        )
