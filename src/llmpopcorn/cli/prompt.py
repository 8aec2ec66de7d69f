"""``popcorn prompt``: the exact messages a query would send, without calling an LLM."""

from __future__ import annotations

import click

from llmpopcorn.cli import main
from llmpopcorn.cli.options import common_options, pe_options, settings_from


@main.command("prompt")
@click.argument("query")
@pe_options
@common_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the prompt (messages, references, PE choices) as JSON.",
)
def prompt_command(query: str, as_json: bool, **params) -> None:
    """Print the messages that `popcorn make QUERY` would send and, in PE mode, the
    reference videos chosen from the corpus. No LLM is called."""
    from llmpopcorn.pipeline.core import (
        Pipeline,  # here, not at the top: `popcorn --help` stays fast
    )

    settings = settings_from(params)
    prompt = Pipeline(settings).prompt(query)
    if as_json:
        click.echo(prompt.model_dump_json(indent=2))
        return
    for message in prompt.messages:
        click.echo(f"===== {message.role} =====")
        click.echo(message.content)
        click.echo()
    if prompt.mode != "pe":
        return
    pe = prompt.settings
    cats = ", ".join(
        f"{c['name']} (similarity {c['similarity']:.3f}, {c['videos']} videos)"
        for c in pe["categories"]
    )
    pools = pe["pools"]
    click.echo("===== references =====")
    click.echo(f"Embedder:   {pe['embedder']}")
    click.echo(f"Categories: {cats}")
    click.echo(
        f"Pools:      {pools['popular']} popular, {pools['unpopular']} unpopular "
        f"(ratio {pe['ratio']})"
    )
    click.echo(
        f"Shown:      {pe['shown']['popular']} popular + {pe['shown']['unpopular']} unpopular "
        f"(requested {pe['requested']['popular']} + {pe['requested']['unpopular']})"
    )
    click.echo(f"{'#':>3}  {'label':<9} {'video_id':>8} {'comments':>8} {'sim':>6}  title")
    for i, ref in enumerate(prompt.references, 1):
        sim = "" if ref.similarity is None else f"{ref.similarity:.3f}"
        count = ref.comment_count or 0
        click.echo(f"{i:>3}  {ref.label:<9} {ref.video_id:>8} {count:>8} {sim:>6}  {ref.title}")
    for note in pe.get("notes", []):
        click.echo(f"note: {note}", err=True)
