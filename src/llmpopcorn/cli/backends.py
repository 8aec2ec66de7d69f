"""``popcorn backends``: what is registered and whether it can run here."""

from __future__ import annotations

import json

import click

from ..registry import KINDS, registry
from ..settings import Settings
from . import main


def backend_table(settings: Settings | None = None) -> dict[str, list[dict]]:
    table: dict[str, list[dict]] = {}
    for kind in KINDS:
        rows = []
        for name in registry.names(kind):
            try:
                cls = registry.get(kind, name)
                avail = cls.availability(settings)
                rows.append(
                    {
                        "name": name,
                        "description": getattr(cls, "description", ""),
                        "usable": avail.ok,
                        "reason": avail.reason,
                    }
                )
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the rest
                rows.append(
                    {
                        "name": name,
                        "description": "",
                        "usable": False,
                        "reason": f"failed to load: {exc}",
                    }
                )
        if rows:
            table[kind] = rows
    return table


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
