"""``popcorn mcp``: the Model Context Protocol server for agents, a thin shell over the
pipeline and the run store (it shares the web API's request validation)."""
