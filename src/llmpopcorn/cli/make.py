"""``popcorn make``: one query in, a run directory out."""

from __future__ import annotations

import click

from llmpopcorn.cli import main
from llmpopcorn.cli.options import (
    common_options,
    llm_options,
    package_options,
    pe_options,
    render_options,
    setting_option,
    settings_from,
)


@main.command()
@click.argument("query")
@pe_options
@llm_options
@render_options
@package_options
@common_options
@setting_option("variants")
@setting_option("refine")
@setting_option("score")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the run record as JSON (and nothing else) on stdout.",
)
def make(query: str, variants: int | None, score: bool | None, as_json: bool, **params) -> None:
    """Generate a micro-video for QUERY: title, cover, 3-second clip, score, report.

    Runs offline on the CPU by default (offline composer + draft renderers). The
    run directory holds record.json, cover.png, clip.mp4 and report.html.
    """
    from llmpopcorn.pipeline.core import (
        Pipeline,  # here, not at the top: `popcorn --help` stays fast
    )
    from llmpopcorn.pipeline.report import record_json

    settings = settings_from(params, score=score, variants=variants)
    signer = None
    if settings.package:  # a bad certificate fails here, before anything is generated
        from llmpopcorn.pipeline.package import signer_from_settings

        signer = signer_from_settings(settings)
        if signer is not None:
            signer.algorithm()
    pipeline = Pipeline(settings)

    def on_stage(name: str) -> None:
        click.echo(f"... {name}", err=True)

    record = pipeline.make(query, on_stage=on_stage)
    if settings.package:
        from llmpopcorn.pipeline.package import make_package

        on_stage("package")
        make_package(record.run_dir, signer=signer, record=record)
        if signer is None:
            click.echo(
                "note: package.zip carries the AI-generated disclosure in its files but no "
                "C2PA signature: set --c2pa-cert and --c2pa-key to sign it",
                err=True,
            )
    for note in record.notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        click.echo(record_json(record))
        return
    idea = record.idea
    assert idea is not None
    click.echo(f"Title:         {idea.title}")
    click.echo(f"Cover prompt:  {idea.cover_prompt}")
    click.echo(f"Video prompt:  {idea.video_prompt}")
    if record.score:
        s = record.score
        line = f"Predicted:     {s.expected_comments:.0f} comments (log2 {s.log2_comments:.2f})"
        if s.interval:
            line += f", {s.interval_level or 0:.0%} interval {2 ** s.interval[0]:.0f}-{2 ** s.interval[1]:.0f}"
        click.echo(line)
        calibrated = s.extra.get("calibrated")
        if calibrated:
            click.echo(
                f"Calibrated:    {calibrated['expected_comments']:.0f} comments for your audience "
                f"(log2 {calibrated['log2_comments']:.2f}; from {calibrated['posts']} of your posts)"
            )
        judge = f"{s.predictor}, read: {', '.join([*(s.extra.get('inputs') or {}).get('fields', {}), 'category'])}"
        click.echo(f"Category:      {s.category} (judge {judge})")
    if record.variants:
        click.echo("Variants (best first):")
        for rank, v in enumerate(record.variants, start=1):
            if v.idea is None:
                click.echo(f"  {rank}. seed {v.seed}: failed ({v.error})")
            else:
                click.echo(
                    f"  {rank}. {v.expected_comments:8.1f} comments  {v.idea.title}  (seed {v.seed})"
                )
    click.echo(f"Run directory: {record.run_dir}")
    for art in record.artifacts:
        click.echo(f"  {art.kind + ':':<7} {art.path} ({art.bytes:,} bytes)")
    click.echo("  report: report.html")
