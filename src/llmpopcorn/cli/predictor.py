"""``popcorn predictor train|eval``: the popularity predictor on MicroLens."""

from __future__ import annotations

import json
from pathlib import Path

import click

from llmpopcorn.cli import main
from llmpopcorn.cli.options import predictor_model_option, setting_option, settings_from


@main.group()
def predictor() -> None:
    """Train and evaluate the popularity predictor (MMRA-style, MicroLens labels).

    \b
    Retrain the shipped default model (same seed, same split):
      popcorn predictor train --data DIR --out src/llmpopcorn/predict/models/default
    Evaluate it on rows it has not seen:
      popcorn predictor eval --data DIR --json   (rows in its memory are left out)
    """


@predictor.command()
@setting_option("data_dir")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write the model and metrics.json into.",
)
@click.option(
    "--model",
    "model",
    default="auto",
    show_default=True,
    help="Model to save: auto (best validation nMSE) or one of global-mean, "
    "category-mean, tfidf-ridge, lex-ridge, knn, embed-ridge, mmra, mmra-stack.",
)
@click.option(
    "--seed", type=int, default=None, help="Seed of the split and the training [default 42]."
)
@click.option(
    "--only", multiple=True, help="Train only these models (repeatable) instead of all of them."
)
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="torch CPU threads while embedding the corpus (1 is much faster on a busy machine; "
    "0: torch's default).",
)
@click.option(
    "--part",
    type=click.Choice(["all", "judge", "reference", "reward", "evaluation"]),
    default="all",
    show_default=True,
    help="Train on this part of the corpus only (judge: the study's independent judge, "
    "never trained on PE's reference pool; reward / evaluation: the two halves of the judge "
    "part, for the refinement loop's reward judge and the judge that evaluates it).",
)
def train(
    data_dir: str | None,
    out: str,
    model: str,
    seed: int | None,
    only: tuple[str, ...],
    threads: int,
    part: str,
) -> None:
    """Train every model on one seeded 80/10/10 split, save the chosen one."""
    from llmpopcorn.predict.train import DEFAULT_MODELS, metrics_table, train_and_save

    settings = settings_from({"data_dir": data_dir, "seed": seed})
    bars: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = click.progressbar(
                length=max(total, 1), label=f"{stage:<14}", file=click.get_text_stream("stderr")
            )
            bar.__enter__()
            bars[stage] = bar
        if bar is None or getattr(bar, "finished", False):
            return
        bar.update(max(0, min(done, total) - bar.pos))  # type: ignore[attr-defined]
        if done >= total:
            bar.finished = True  # type: ignore[attr-defined]
            bar.render_finish()  # type: ignore[attr-defined]

    path, metrics = train_and_save(
        settings.data_dir,
        out,
        model=model,
        seed=settings.seed,
        models=list(only) or DEFAULT_MODELS,
        cache_dir=settings.cache_dir,
        progress=progress,
        threads=threads or None,
        part=part,
    )
    click.echo(metrics_table(metrics, "valid"))
    click.echo()
    click.echo(metrics_table(metrics, "test"))
    click.echo()
    click.echo(
        f"saved {metrics['default']} (chosen by {metrics['selection']}; part {part}, "
        f"{metrics['partition']['rows']} of {metrics['partition']['corpus_rows']} rows; "
        f"text fields: {', '.join(metrics['inputs']['text_fields'])}) to {path}"
    )
    click.echo(f"metrics: {path / 'metrics.json'}")


@predictor.command(name="eval")
@predictor_model_option
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(),
    help="A CSV with the corpus columns (or a data directory).",
)
@click.option(
    "--include-seen", is_flag=True, help="Also score rows that were in the model's training data."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else.")
def eval_(model_dir: str | None, data: str, include_seen: bool, as_json: bool) -> None:
    """Evaluate a predictor on a labelled CSV (nMSE, MAE, SRC, batched, coverage)."""
    from llmpopcorn.predict.evaluate import evaluate_csv
    from llmpopcorn.predict.train import json_safe

    settings = settings_from({"predictor": model_dir})
    report = json_safe(evaluate_csv(settings.predictor, data, include_seen=include_seen))
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
        return
    click.echo(f"model: {report['model']} ({report['model_dir']})")
    click.echo(
        f"rows:  {report['n']} (left out as seen in training: "
        f"{report['rows_in_training_data'] - report['rows_in_training_data_used']})"
    )
    for key in (
        "nmse",
        "mae",
        "src",
        "nmse_batched",
        "mae_batched",
        "src_batched",
        "interval_coverage",
    ):
        value = report.get(key)
        click.echo(f"{key:<18} {'n/a' if value is None else f'{value:.4f}'}")
    saved = Path(report["model_dir"]) / "metrics.json"
    if saved.exists():  # every model on the split the model was trained on, for comparison
        from llmpopcorn.predict.train import metrics_table

        click.echo(f"\nAll models on the held-out test split of its training data ({saved}):")
        click.echo(metrics_table(json.loads(saved.read_text()), "test"))


@predictor.command()
@predictor_model_option
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding your runs and store.sqlite [default ./popcorn-runs, env POPCORN_OUT].",
)
@click.option(
    "--prior-posts",
    type=click.FloatRange(min=0),
    default=None,
    help="How many posts' worth of trust in the uncalibrated judge [default 5].",
)
@click.option("--dry-run", is_flag=True, help="Show the fit and the table; save nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the calibration as JSON.")
def calibrate(model_dir, out, prior_posts, dry_run, as_json) -> None:
    """Fit the judge to your own posts (recorded with `popcorn feedback`).

    A linear correction of the judge's log2 prediction, shrunk toward no correction
    while there are few posts (a ridge fit toward the identity; --prior-posts sets how
    many posts the prior counts as). Prints how far predictions were off before and
    after, each post predicted by a fit without it (leave-one-out). Saved as
    calibration.json beside store.sqlite: make, batch, the report and the studio then
    show the calibrated score, with the number of posts behind it, beside the judge's.
    """
    from llmpopcorn.core.errors import DataError
    from llmpopcorn.predict.base import read_config
    from llmpopcorn.predict.scorer import resolve_model_dir
    from llmpopcorn.runs.feedback import calibrate as fit_calibration
    from llmpopcorn.runs.store import Store

    settings = settings_from({"predictor": model_dir})
    folder = Path(out) if out else settings.out_dir
    path = resolve_model_dir(settings.predictor)
    config = read_config(path)
    name = f"{config.get('model')}@{path.name}"
    halfwidth = (config.get("conformal") or {}).get("halfwidth")
    store_path = folder / "store.sqlite"
    if not store_path.exists():
        raise DataError(
            f"no run store at {store_path}",
            "record outcomes first with `popcorn feedback RUN_ID --comments N`, or pass --out",
        )
    with Store(store_path) as store:
        cal, rows = fit_calibration(
            store, folder, name, halfwidth=halfwidth, prior_posts=prior_posts, save=not dry_run
        )
    if as_json:
        click.echo(json.dumps(cal.model_dump(mode="json"), sort_keys=True))
        return
    loo = cal.leave_one_out or {}
    click.echo(
        f"{name}: {cal.posts} post(s); calibrated = p + {cal.offset:+.3f} + "
        f"({cal.slope:.3f} - 1) x (p - {cal.center:.2f})  [{cal.method}, prior {cal.prior_posts:g} posts]"
    )
    click.echo("\nHow far predictions were off (log2 comments; each post left out of its own fit):")
    click.echo("| | MAE | RMSE | bias (pred - real) | within the 80% interval |")
    click.echo("|---|---|---|---|---|")
    for label, key in (("judge", "before"), ("calibrated (leave-one-out)", "after")):
        m = loo.get(key) or {}
        cover = "n/a" if m.get("coverage") is None else f"{m['coverage']:.0%}"
        click.echo(f"| {label} | {m['mae']:.3f} | {m['rmse']:.3f} | {m['bias']:+.3f} | {cover} |")
    click.echo("\n| run | title | real | judge | calibrated (left out) |")
    click.echo("|---|---|---|---|---|")
    for r in loo.get("rows", []):
        click.echo(
            f"| {r['run_id']} | {(r['title'] or '')[:40]} | {r['comments']} | "
            f"{2 ** r['predicted']:.0f} | {2 ** r['calibrated']:.0f} |"
        )
    if dry_run:
        click.echo("\n(dry run: nothing saved)")
    else:
        click.echo(f"\nsaved to {folder / 'calibration.json'} ({len(rows)} posts)")


@predictor.command()
@predictor_model_option
@setting_option("data_dir")
@click.option("--write", is_flag=True, help="Save the recalibrated interval into the model.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def intervals(model_dir: str | None, data_dir: str | None, write: bool, as_json: bool) -> None:
    """Recalibrate a model's 80 % interval on its calibration split (no retraining).

    Rebuilds the model's own split from its config.json, checks that it reproduces the
    recorded test metrics, calibrates the split-conformal interval on half of the held-out
    test rows (used for nothing else) and measures its coverage on the other half.
    Predictions do not change; only the interval's half-width does.
    """
    from llmpopcorn.predict.intervals import recalibrate
    from llmpopcorn.predict.scorer import resolve_model_dir

    settings = settings_from({"predictor": model_dir, "data_dir": data_dir})
    result = recalibrate(
        resolve_model_dir(settings.predictor),
        settings.data_dir,
        cache_dir=settings.cache_dir,
        write=write,
    )
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    before, after = result["before"], result["after"]
    click.echo(f"{result['model_dir']} (part {result['part']}, {result['rows']} rows)")
    click.echo(
        f"before: half-width {before.get('halfwidth', float('nan')):.4f}, calibrated on "
        f"{before.get('calibrated_on', '?')}; coverage on the coverage rows "
        f"{before.get('coverage_on_the_same_rows') or float('nan'):.3f}"
    )
    click.echo(
        f"after:  half-width {after['halfwidth']:.4f}, calibrated on {after['calibration_rows']} "
        f"rows; test coverage {after['test_coverage']:.3f} on {after['coverage_rows']} rows "
        f"(nominal {after['level']:.2f})"
    )
    click.echo("saved to config.json" if write else "(not saved: pass --write)")
