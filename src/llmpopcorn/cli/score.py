"""``popcorn score``: predicted popularity of one idea, with its explanation."""

from __future__ import annotations

import click

from llmpopcorn.cli import main
from llmpopcorn.cli.options import predictor_model_option, setting_option, settings_from


@main.command()
@click.option("--title", required=True, help="The video title.")
@click.option("--cover-prompt", default="", help="The cover image prompt.")
@click.option("--video-prompt", default="", help="The video prompt.")
@click.option("--query", default=None, help="The query the idea answers (recorded only).")
@click.option(
    "--category", default="", help="MicroLens category; default: inferred from the nearest videos."
)
@predictor_model_option
@setting_option("data_dir")  # to show the neighbours' titles
@click.option("--json", "as_json", is_flag=True, help="Print the score as JSON.")
def score(
    title: str,
    cover_prompt: str,
    video_prompt: str,
    query: str | None,
    category: str,
    model_dir: str | None,
    data_dir: str | None,
    as_json: bool,
) -> None:
    """Predict the comment count of an idea: value, 80% interval, percentile, neighbours."""
    from llmpopcorn.predict import load_scorer

    settings = settings_from({"predictor": model_dir, "data_dir": data_dir})
    result = load_scorer(settings).score_text(
        title, cover_prompt, video_prompt, category=category, query=query
    )
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    click.echo(
        f"Predicted:   {result.expected_comments:.0f} comments (log2 {result.log2_comments:.2f})"
    )
    if result.interval:
        lo, hi = result.interval
        click.echo(
            f"Interval:    {result.interval_level or 0:.0%}: {2**lo:.0f} to {2**hi:.0f} comments"
        )
    inferred = " (resolved from the title)" if result.extra.get("category_resolved") else ""
    click.echo(f"Category:    {result.category}{inferred}")
    if result.percentile is not None:
        click.echo(f"Percentile:  {result.percentile:.0f} among real {result.category} videos")
    click.echo("Nearest training videos that drove it:")
    for ref in result.neighbours:
        title_text = f"  {ref.title}" if ref.title else ""
        counts = f"{ref.comment_count:>4} comments  sim {ref.similarity:.2f}"
        click.echo(f"  id {ref.video_id:>6}  {counts}{title_text}")
