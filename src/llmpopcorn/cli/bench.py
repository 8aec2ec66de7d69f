"""``popcorn bench``: the paper's study (queries x LLMs x basic/PE (x refs) x video x seeds)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
from tqdm import tqdm

from llmpopcorn.cli import main
from llmpopcorn.cli.options import (
    choices,
    execution_options,
    options_for,
    setting_option,
    settings_from,
)
from llmpopcorn.core.errors import ConfigError, DataError, PopcornError
from llmpopcorn.core.settings import Settings, _from_config, _from_env
from llmpopcorn.study.bench import (
    DEFAULT_ROUNDS,
    QUERY_KINDS,
    REFINE_ARM,
    STUDY_DEFAULTS,
    StudyPlan,
    load_queries,
    run_study,
    study_rows,
)

# the study's axes (--llm, --mode, --refs, --video, --seeds) and --out are its own options
_shared = options_for(
    "common",
    "llm",
    "pe",
    "render",
    exclude=("seed", "llm", "mode", "n_refs", "video", "out_dir"),
)


def _int_list(flag: str, text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"{flag} must be integers separated by commas, got {text!r}",
            f"e.g. {flag} 42,43,44" if flag == "--seeds" else f"e.g. {flag} 10,50,100",
        ) from None
    if flag == "--refs" and any(v < 1 for v in values):
        raise ConfigError(
            f"--refs values must be at least 1, got {text!r}", "e.g. --refs 10,50,100"
        )
    return values


def study_settings(params: dict, **explicit) -> tuple[Settings, dict[str, str]]:
    """Settings with the study's defaults (:data:`STUDY_DEFAULTS`) applied only where no
    flag, environment variable or config file set the field; returns the defaults used."""
    env = os.environ
    given = {k for k, v in params.items() if v is not None}
    given |= set(_from_env(env)) | set(_from_config(params.get("_config"), env))
    given |= {k for k, v in explicit.items() if v is not None}
    applied = {}
    for name, value in STUDY_DEFAULTS.items():
        if name in given or name not in Settings.model_fields:
            continue
        if name == "predictor":
            from llmpopcorn.predict.scorer import resolve_model_dir

            try:
                resolve_model_dir(value)
            except DataError as exc:  # never fall back silently to a judge that saw PE's pool
                raise ConfigError(
                    f"the study's independent judge '{value}' cannot be found ({exc.message})",
                    "reinstall the package (it ships models/judge), train it with `popcorn "
                    "predictor train --data DIR --out DIR --part judge` and pass --predictor "
                    "DIR, or choose a judge explicitly with --predictor NAME",
                ) from None
        applied[name] = value
    return settings_from(params, **explicit, **applied), applied


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
    type=click.Choice(choices("mode")),
    help="Mode(s) [default: basic and pe].",
)
@click.option(
    "--arms",
    "arms",
    help="Arms, comma-separated: basic, pe and refine (basic mode plus --refine K rounds of "
    "judge-guided refinement, default 2); with refine the summary adds every arm's gain over "
    "basic under the reward judge and under the independent evaluation judge [default: the "
    "--mode values].",
)
@setting_option("refine")
@click.option(
    "--refs",
    "refs",
    help="PE: reference counts to compare, comma-separated, e.g. 10,50,100 as in the paper "
    "[default: the configured --refs, 50].",
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
    "--predictor",
    "predictor",
    default=None,
    help="Judge: a model name under models/ or a folder [default: 'judge' when shipped, "
    "env POPCORN_PREDICTOR].",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default="popcorn-bench",
    show_default=True,
    help="Study directory (store.sqlite, runs/, summary.*); rerunning resumes it.",
)
@setting_option("render")
@click.option(
    "--baseline-k",
    type=int,
    default=5,
    show_default=True,
    help="Human baseline: real videos per query (0: none).",
)
@click.option(
    "--keep-failed", is_flag=True, help="On resume, do not retry cells that failed before."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--allow-dependent-judge",
    is_flag=True,
    help="Run even when the judge learned from videos PE may show (its memory or training "
    "data shares ids or normalised titles with the reference pool); every output then says "
    "so [default: refuse].",
)
@execution_options
@_shared
def bench_command(
    llms,
    modes,
    arms,
    refs,
    videos,
    seeds,
    kinds,
    limit,
    predictor,
    out,
    render,
    baseline_k,
    keep_failed,
    as_json,
    allow_dependent_judge,
    concurrency,
    render_slots,
    executor,
    address,
    **params,
):
    """Run the LLMPopcorn study and summarise predicted popularity.

    Each cell (query, LLM, mode, refs, video backend, seed) is a full `popcorn make` run,
    keyed by a hash of every setting that changes its result; its score goes into
    OUT/store.sqlite. Cells run on the same executors as `popcorn batch`: up to -k cells
    ask the LLM at once, rendering has its own pool (--render-slots), and --executor ray
    spreads them over a Ray cluster. Rerunning the same command skips finished cells (another process
    on the same folder skips the cells this one holds); other settings make new cells.
    Writes OUT/results.csv, summary.md, summary.json and a self-contained summary.html:
    means with bootstrap 95 % intervals, PE - basic paired by query with a Wilcoxon test,
    per category, head-to-head wins, a human baseline and charts.
    """
    from llmpopcorn.study.report import all_failed, summary_markdown, write_reports

    started = time.perf_counter()
    params["predictor"] = predictor
    settings, applied = study_settings(params, render=render)
    queries = load_queries(settings.data_dir, kinds or QUERY_KINDS, limit)
    arm_modes = _arms(arms, modes)
    plan = StudyPlan(
        queries=queries,
        llms=list(llms) or [settings.llm],
        modes=arm_modes,
        refine_rounds=settings.refine or DEFAULT_ROUNDS,
        videos=list(videos) or [settings.video],
        seeds=_int_list("--seeds", seeds) or [settings.seed],
        refs=_int_list("--refs", refs) or [],
    )
    size = plan.size(settings)
    click.echo(
        f"{size} cells: {len(queries)} queries x {len(plan.arms(settings))} arm(s) "
        f"(LLM x mode x refs x video) x {len(plan.seeds)} seed(s) -> {out}"
        + (" (not rendered)" if not settings.render else ""),
        err=True,
    )
    if applied:
        click.echo("study defaults: " + ", ".join(f"{k}={v}" for k, v in applied.items()), err=True)
    scorer, independence = _check_judge(settings, plan, allow_dependent_judge)
    with tqdm(total=size, unit="cell", file=click.get_text_stream("stderr")) as bar:

        def on_cell(_key, arm, status):
            bar.set_postfix_str(f"{arm.llm}/{arm.mode} {status}", refresh=False)
            bar.update(1)

        run = run_study(
            plan,
            settings,
            Path(out),
            retry_failed=not keep_failed,
            on_cell=on_cell,
            concurrency=concurrency,
            render_slots=render_slots,
            executor=executor,
            address=address,
        )
    rows = study_rows(run.store_path, run.keys)
    baseline = _baseline(queries, settings, baseline_k, scorer)
    loop = None
    if REFINE_ARM in plan.modes:  # both loop judges on every cell, every arm vs basic
        from llmpopcorn.study.loop import add_loop_scores, loop_summary

        info = add_loop_scores(rows, settings)
        loop = loop_summary(rows, info, rounds=plan.refine_rounds)
    extra = {
        "runtime_seconds": round(time.perf_counter() - started, 1),
        "cells_computed": run.computed,
        "cells_skipped": run.skipped,
        "cells_busy_elsewhere": run.busy,
        "executor": {**run.executor, "concurrency": concurrency},
        "study_defaults_applied": applied,
        # the judge against the pools PE may show, checked before any cell ran
        "independence": independence,
        # the base settings' llm is not what the cells asked (--llm names the arms' LLMs)
        "settings": {
            k: v
            for k, v in settings.public().items()
            if k not in ("data_dir", "out_dir", "cache_dir")
        }
        | {"llm": plan.llms[0] if len(plan.llms) == 1 else list(plan.llms)},
        "plan": {
            "llms": plan.llms,
            "modes": plan.modes,
            "refs": plan.refs or [settings.n_refs],
            "videos": plan.videos if settings.render else [],
            "seeds": plan.seeds,
            "queries": len(queries),
        },
    }
    if loop is not None:
        extra["loop"] = loop
    if run.busy:
        extra["note"] = (
            f"{run.busy} cell(s) were held by another process and are missing from this summary; "
            "rerun when it has finished."
        )
    summary = write_reports(rows, Path(out), baseline=baseline, extra=extra)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(summary_markdown(summary))
        click.echo(f"Study directory: {out} (summary.html has the charts)", err=True)
    failed = all_failed(summary)
    if failed:
        raise PopcornError(
            f"the study has no results: {failed}",
            f"see the attrition table in {Path(out) / 'summary.md'} and each cell's error in "
            "results.csv; check the LLM server, model and --max-tokens, then rerun the same "
            "command (failed cells are retried)",
        )


def _arms(arms: str | None, modes: tuple[str, ...]) -> list[str]:
    """The study's arms from --arms (else --mode; default basic and pe)."""
    if not arms:
        return list(modes) or ["basic", "pe"]
    if modes:
        raise ConfigError("pass either --arms or --mode, not both", "e.g. --arms basic,pe,refine")
    chosen = [a.strip() for a in arms.split(",") if a.strip()]
    known = ("basic", "pe", REFINE_ARM)
    unknown = [a for a in chosen if a not in known]
    if unknown or not chosen:
        raise ConfigError(
            f"unknown arm(s) in --arms: {', '.join(unknown) or repr(arms)}",
            f"choose from {', '.join(known)}, e.g. --arms basic,pe,refine",
        )
    if REFINE_ARM in chosen and "basic" not in chosen:
        raise ConfigError("the refine arm is compared with basic", "add basic: --arms basic,refine")
    return list(dict.fromkeys(chosen))


def _check_judge(settings: Settings, plan: StudyPlan, allow: bool):
    """The judge (loaded once, for the check and the human baseline) and its overlap with
    the pools the arms draw references from; refuses a dependent judge unless ``allow``."""
    from llmpopcorn.runs.honesty import dependent_judge_banner
    from llmpopcorn.study.independence import judge_independence, require_independent

    scorer = None
    if settings.score and settings.data_dir is not None:
        from llmpopcorn.core.errors import MissingExtraError
        from llmpopcorn.predict import load_scorer

        try:
            scorer = load_scorer(settings)
        except MissingExtraError:
            pass  # the cells say "not scored"; nothing a missing judge could know
    facts = require_independent(judge_independence(settings, plan.modes, scorer), allow)
    banner = dependent_judge_banner(facts)
    if banner:
        click.echo(f"warning: {banner}", err=True)
    return scorer, facts


def _baseline(queries, settings: Settings, k: int, scorer=None):
    if k <= 0 or settings.data_dir is None:
        return None
    from llmpopcorn.core.errors import MissingExtraError, PopcornError
    from llmpopcorn.study.baseline import human_baseline

    if settings.score and scorer is None:
        from llmpopcorn.predict import load_scorer

        try:
            scorer = load_scorer(settings)
        except MissingExtraError as exc:
            click.echo(f"human baseline without predictions: {exc}", err=True)
    try:
        return human_baseline(queries, settings, scorer=scorer, k=k)
    except PopcornError as exc:
        click.echo(f"no human baseline: {exc}", err=True)
        return None
