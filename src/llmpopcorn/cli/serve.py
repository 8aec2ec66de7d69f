"""``popcorn serve``: the local web UI."""

from __future__ import annotations

import click

from . import main
from .options import common_options, llm_options, pe_options, render_options, settings_from


@main.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind (keep 127.0.0.1 unless you mean to share it).",
)
@click.option("--port", default=8765, show_default=True, type=int, help="Port.")
@pe_options
@llm_options
@render_options
@common_options
def serve_command(host: str, port: int, **params) -> None:
    """Start the web UI (needs the [web] extra): a form that runs the same pipeline
    as `popcorn make`, with the cover, clip, score and report in the browser."""
    from ..web.app import serve

    settings = settings_from(params)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"warning: serving on {host}: anyone who can reach it can run generations", err=True
        )
    click.echo(f"LLMPopcorn web UI on http://{host}:{port}/ (Ctrl+C to stop)", err=True)
    serve(settings, host=host, port=port)
