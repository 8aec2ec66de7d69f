"""``popcorn mcp``: the MCP server for agents (stdio)."""

from __future__ import annotations

import importlib.util

from llmpopcorn.cli import main
from llmpopcorn.cli.options import (
    common_options,
    llm_options,
    pe_options,
    render_options,
    settings_from,
)
from llmpopcorn.cli.serve import install_command
from llmpopcorn.core.errors import PopcornError


@main.command("mcp")
@pe_options
@llm_options
@render_options
@common_options
def mcp_command(**params) -> None:
    """Serve LLMPopcorn to agents over MCP (stdio; needs the [mcp] extra): tools make_run,
    score_idea, build_pe_prompt, list_runs and get_run. Runs share the studio's run store
    (OUT/store.sqlite) and history.

    Register it with an MCP client as the command `popcorn mcp` (plus any flags, e.g.
    --data DIR --out DIR)."""
    if importlib.util.find_spec("mcp") is None:
        raise PopcornError(
            "the MCP server needs the 'mcp' package, which is not installed",
            f"install the mcp extra: {install_command('mcp')}",
        )
    from llmpopcorn.mcp.server import serve_stdio

    serve_stdio(settings_from(params))
