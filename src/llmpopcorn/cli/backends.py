"""``popcorn backends``: what is registered and whether it can run here."""

from __future__ import annotations

import json

import click

from llmpopcorn.cli import main
from llmpopcorn.core.registry import backend_table
from llmpopcorn.core.settings import Settings


@main.command("backends")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def backends_command(as_json: bool) -> None:
    """List every backend by kind, whether it is usable here and, if not, why."""
    try:
        settings = Settings.resolve()
    except Exception:  # noqa: BLE001 - listing must work even with a broken config
        settings = None
    table = backend_table(settings)
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    for kind, rows in table.items():
        click.echo(f"{kind}:")
        for row in rows:
            mark = "yes" if row["usable"] else "no "
            reason = f"  [{row['reason']}]" if row["reason"] else ""
            click.echo(f"  {row['name']:<13} {mark}  {row['description']}{reason}")
