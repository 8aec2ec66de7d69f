"""``popcorn backends``: what is registered and whether it can run here."""

from __future__ import annotations

import json

import click

from llmpopcorn.cli import main
from llmpopcorn.core.registry import backend_table
from llmpopcorn.core.settings import Settings

#: how each status reads in the table
_MARKS = {
    "ready": "ready",
    "configured": "configured",
    "reachable": "reachable",
    "unreachable": "UNREACHABLE",
    "unavailable": "no",
}


@main.command("backends")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.option(
    "--check",
    is_flag=True,
    help="Also contact each local server a backend needs (Ollama, vLLM, llama.cpp: a GET of "
    "its /models, no key sent), all at once, at most --timeout seconds: 'configured' becomes "
    "'reachable' or 'UNREACHABLE'. Remote APIs are not contacted.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 30.0),
    default=2.0,
    show_default=True,
    help="Seconds a --check probe may take.",
)
def backends_command(as_json: bool, check: bool, timeout: float) -> None:
    """List every backend by kind and whether it can run here: 'ready', 'configured' (a
    server is set but was not contacted; --check contacts it), 'reachable', 'UNREACHABLE'
    or 'no', with the reason."""
    try:
        settings = Settings.resolve()
    except Exception:  # noqa: BLE001 - listing must work even with a broken config
        settings = None
    table = backend_table(settings, check=check, timeout=timeout)
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    for kind, rows in table.items():
        click.echo(f"{kind}:")
        for row in rows:
            mark = _MARKS.get(row.get("status", ""), "?")
            reason = f"  [{row['reason']}]" if row["reason"] else ""
            click.echo(f"  {row['name']:<13} {mark:<11} {row['description']}{reason}")
    if not check:
        click.echo("(servers are not contacted: popcorn backends --check)")
