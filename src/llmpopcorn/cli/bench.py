"""``popcorn bench``: the paper's study (queries x LLMs x basic/PE x video x seeds)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from tqdm import tqdm

from ..bench import QUERY_KINDS, StudyPlan, load_queries, run_study, summary_markdown, write_reports
from ..errors import ConfigError
from . import main
from .options import _COMMON, _LLM, _PE, _RENDER, _apply, settings_from

_shared = _apply(
    [
        [o for o in _COMMON if o[0] != "--seed"],
        [o for o in _LLM if o[0] != "--llm"],
        [o for o in _PE if o[0] != "--mode"],
        [o for o in _RENDER if o[0] not in ("--video", "--out")],
    ]
)


def _seeds(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"--seeds must be integers separated by commas, got {text!r}", "e.g. --seeds 42,43,44"
        ) from None


@main.command("bench")
@click.option(
    "--llm",
    "llms",
    multiple=True,
    help="LLM backend(s) to compare; repeat the flag [default: the configured one].",
)
@click.option(
    "--mode",
    "modes",
    multiple=True,
    type=click.Choice(["basic", "pe"]),
    help="Mode(s) [default: basic and pe].",
)
@click.option(
    "--video", "videos", multiple=True, help="Video backend(s) [default: the configured one]."
)
@click.option(
    "--seeds", help="Comma-separated seeds, e.g. 42,43,44 [default: the configured seed]."
)
@click.option(
    "--queries",
    "kinds",
    multiple=True,
    type=click.Choice(QUERY_KINDS),
    help="Query set(s) [default: abstract and concrete, 100 each].",
)
@click.option(
    "--limit", type=int, help="Use only the first N queries of each set (for a quick look)."
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default="popcorn-bench",
    show_default=True,
    help="Study directory (store.sqlite, runs/, summary.md); rerunning resumes it.",
)
@click.option(
    "--render/--no-render",
    default=True,
    show_default=True,
    help="Render covers and clips, or only ideate and score.",
)
@click.option(
    "--keep-failed", is_flag=True, help="On resume, do not retry cells that failed before."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_shared
def bench_command(
    llms, modes, videos, seeds, kinds, limit, out, render, keep_failed, as_json, **params
):
    """Run the LLMPopcorn study and summarise predicted popularity per cell.

    Each cell (query, LLM, mode, video backend, seed) is a full `popcorn make` run;
    its score goes into OUT/store.sqlite. Rerunning the same command skips finished
    cells, so an interrupted study resumes. Writes OUT/summary.md, summary.json and
    results.csv: mean predicted log2 comments with bootstrap 95 % intervals, and PE
    against basic mode paired by query (gain, interval, win rate).
    """
    settings = settings_from(params, render=render)
    queries = load_queries(settings.data_dir, kinds or QUERY_KINDS, limit)
    plan = StudyPlan(
        queries=queries,
        llms=list(llms) or [settings.llm],
        modes=list(modes) or ["basic", "pe"],
        videos=list(videos) or [settings.video],
        seeds=_seeds(seeds) or [settings.seed],
    )
    click.echo(
        f"{plan.size} cells: {len(queries)} queries x {len(plan.llms)} LLM(s) x {len(plan.modes)} "
        f"mode(s) x {len(plan.videos)} video backend(s) x {len(plan.seeds)} seed(s) -> {out}",
        err=True,
    )
    with tqdm(total=plan.size, unit="cell", file=click.get_text_stream("stderr")) as bar:

        def on_cell(key, status):
            bar.set_postfix_str(f"{key.llm}/{key.mode} {status}", refresh=False)
            bar.update(1)

        store = run_study(plan, settings, Path(out), retry_failed=not keep_failed, on_cell=on_cell)
    summary = write_reports(store, Path(out))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(summary_markdown(summary))
        click.echo(f"Study directory: {out}", err=True)
