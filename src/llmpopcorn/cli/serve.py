"""``popcorn serve``: the studio (web UI, REST API, job queue)."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import click

from llmpopcorn.cli import main
from llmpopcorn.cli.options import (
    common_options,
    llm_options,
    pe_options,
    render_options,
    settings_from,
)
from llmpopcorn.core.errors import ConfigError, PopcornError

WEB_MODULES = ("fastapi", "uvicorn")


def install_command(extra: str) -> str:
    """The pip command that adds ``extra`` to this installation: ``pip install -e
    'PATH[extra]'`` for an editable (source) install, else ``pip install
    'llmpopcorn[extra]'``."""
    from importlib import metadata

    try:
        text = metadata.distribution("llmpopcorn").read_text("direct_url.json") or ""
        info = json.loads(text) if text else {}
    except (metadata.PackageNotFoundError, ValueError):
        info = {}
    url = info.get("url", "")
    if info.get("dir_info", {}).get("editable") and url.startswith("file://"):
        return f"pip install -e '{url[len('file://') :]}[{extra}]'"
    return f"pip install 'llmpopcorn[{extra}]'"


def check_web_extra() -> None:
    """Fail before anything starts when the web extra is missing, with the install line."""
    missing = [name for name in WEB_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise PopcornError(
            f"the web UI needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'}"
            " not installed",
            f"install the web extra: {install_command('web')}",
        )


@main.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind. Anything but loopback needs --token.",
)
@click.option("--port", default=8765, show_default=True, type=int, help="Port.")
@click.option(
    "--token",
    envvar="POPCORN_TOKEN",
    default=None,
    help="Access token every API call must carry (Authorization: Bearer TOKEN); "
    "required to bind anything but 127.0.0.1. Env: POPCORN_TOKEN.",
)
@click.option(
    "--draft-workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 16),
    help="CPU draft jobs run at once (model jobs run one at a time per device).",
)
@pe_options
@llm_options
@render_options
@common_options
def serve_command(host: str, port: int, token: str | None, draft_workers: int, **params) -> None:
    """Start the studio: a page with a job queue, live progress, history and packages,
    a REST API (OpenAPI at /docs on loopback) over the same pipeline as `popcorn make`.
    `popcorn -v serve` also logs each request (configured API keys masked)."""
    check_web_extra()
    from llmpopcorn.web.app import create_app
    from llmpopcorn.web.safety import is_loopback

    settings = settings_from(params)
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without an access token: anyone who can reach it "
            "could run jobs",
            "pass --token TOKEN (or set POPCORN_TOKEN), or keep --host 127.0.0.1",
        )
    import uvicorn

    from llmpopcorn.core.redact import register_secret

    register_secret(token)  # masked like the API keys wherever it could be logged
    app = create_app(settings, token=token, host=host, draft_workers=draft_workers)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"LLMPopcorn studio on http://{shown}:{port}/ (Ctrl+C to stop)", err=True)
    if is_loopback(host):
        click.echo(f"API documentation: http://{shown}:{port}/docs", err=True)
    verbose = click.get_current_context().find_root().params.get("verbose") or 0
    uvicorn.run(app, host=host, port=port, **uvicorn_logging(verbose))


def uvicorn_logging(verbose: int = 0) -> dict[str, Any]:
    """uvicorn's logging options for ``popcorn serve``: warnings only, with the request
    log from ``-v`` on, and the secret filter on every uvicorn handler (uvicorn's loggers
    do not propagate to the root's, so the filter the CLI installs there never sees an
    access line or a traceback uvicorn logs)."""
    from uvicorn.config import LOGGING_CONFIG

    from llmpopcorn.core.redact import with_secret_filter

    return {
        "log_config": with_secret_filter(LOGGING_CONFIG),
        "log_level": "info" if verbose >= 1 else "warning",
        "access_log": verbose >= 1,
    }
