"""``popcorn mcp``: an MCP server (stdio, the official ``mcp`` SDK) for agents.

Tools:

- ``make_run``: queue a run and wait for it (up to ``wait_seconds``); the same job queue
  and run store as the studio (web runs, ``kind="web"``), so runs made here show in its
  history and ``list_runs``.
- ``score_idea``: predicted popularity of a title (and prompts) with the videos that
  explain it.
- ``build_pe_prompt``: the exact PE messages and references for a query (no LLM call).
- ``list_runs`` / ``get_run``: history (search, paging) and one run's record.

Agents run on the user's machine, so answers name the run folder and its files (the web
API does not). Errors come back as tool errors with the message and its hint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import PopcornError, require
from llmpopcorn.core.settings import Settings
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.pipeline.refine import refinement_view

INSTRUCTIONS = (
    "LLMPopcorn turns a short query into a micro-video idea (title, cover prompt, video "
    "prompt), renders a cover and a 3-second clip, and predicts its popularity (log2 of the "
    "comment count) from similar MicroLens videos. Use make_run to create one, score_idea "
    "to compare titles quickly, build_pe_prompt to see the retrieval-augmented prompt."
)


def build_server(
    settings: Settings, *, pipeline_factory: Callable[[Settings], Pipeline] | None = None
) -> Any:
    """The MCP server over ``settings`` (its tools share one job queue)."""
    require("mcp", "mcp", "the MCP server")
    from llmpopcorn.web.jobs import progress_pipeline

    pipeline_factory = pipeline_factory or progress_pipeline
    import anyio
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from llmpopcorn.web.jobs import TERMINAL, JobManager
    from llmpopcorn.web.requests import RunRequest

    jobs = JobManager(settings, pipeline_factory=pipeline_factory, draft_workers=1, origin="mcp")
    server = MCPServer("llmpopcorn", instructions=INSTRUCTIONS)
    scorers: dict[str, Any] = {}

    def fail(exc: PopcornError) -> ToolError:
        return ToolError(f"{exc.message} (hint: {exc.hint})")

    def run_view(job_id: str) -> dict[str, Any]:
        row = jobs.row(job_id)
        if row is None:
            raise ToolError(f"no run with id {job_id!r} (hint: list_runs shows the ids)")
        view = jobs.view(row)
        run_dir = jobs.run_dir(job_id)
        if run_dir is not None and (run_dir / "record.json").is_file():
            from llmpopcorn.pipeline.report import load_record

            record = load_record(run_dir)
            view["run_dir"] = str(run_dir)
            view["idea"] = record.idea.model_dump() if record.idea else None
            view["score"] = (
                record.score.model_dump(exclude={"neighbours"}) if record.score else None
            )
            view["variants"] = [v.model_dump() for v in record.variants]
            if record.refinement is not None:
                view["refinement"] = refinement_view(record.refinement)
            view["notes"] = record.notes
            view["files"] = {a.kind: str(run_dir / a.path) for a in record.artifacts}
        return view

    @server.tool()
    async def make_run(
        query: str,
        mode: str = "basic",
        seed: int | None = None,
        variants: int = 1,
        render: bool = True,
        refine: int = 0,
        wait_seconds: float = 600.0,
    ) -> dict[str, Any]:
        """Make a micro-video for `query`: idea, cover, 3-second clip and predicted
        popularity. mode is 'basic' or 'pe' (retrieval-augmented, needs the data folder).
        refine: rounds in which the LLM sees the reward judge's score and explanation and
        writes an improved idea (the best by the reward judge is kept; every round is also
        scored by an independent evaluation judge). Waits up to wait_seconds; a run still
        going is returned with its state."""
        try:
            request = RunRequest(
                query=query, mode=mode, seed=seed, variants=variants, render=render, refine=refine
            )
            jobs.start()
            job = jobs.submit(request)
        except PopcornError as exc:
            raise fail(exc) from None
        except ValueError as exc:
            raise ToolError(f"invalid arguments: {exc}") from None
        deadline = time.monotonic() + max(0.0, wait_seconds)
        while job.state not in TERMINAL and time.monotonic() < deadline:
            await anyio.sleep(0.1)
        return run_view(job.id)

    @server.tool()
    async def score_idea(
        title: str, query: str = "", cover_prompt: str = "", video_prompt: str = ""
    ) -> dict[str, Any]:
        """Predicted popularity of an idea (log2 comments, expected comments, interval,
        percentile) and the similar videos that explain it."""
        from llmpopcorn.core.types import Idea

        def score() -> dict[str, Any]:
            scorer = scorers.get("default")
            if scorer is None:
                scorer = pipeline_factory(settings.model_copy(update={"score": True})).scorer
                if scorer is None:
                    raise ToolError("no popularity predictor is available")
                scorers["default"] = scorer
            idea = Idea(
                title=title,
                cover_prompt=cover_prompt or title,
                video_prompt=video_prompt or title,
            )
            return scorer.score(idea, query=query or title).model_dump()

        try:
            return await anyio.to_thread.run_sync(score)
        except PopcornError as exc:
            raise fail(exc) from None
        except ValueError as exc:
            raise ToolError(f"invalid idea: {exc}") from None

    @server.tool()
    async def build_pe_prompt(
        query: str, n_refs: int = 50, ratio: float = 0.1, num_tags: int = 1
    ) -> dict[str, Any]:
        """The prompt-enhancement (PE) messages for `query`, with the MicroLens reference
        videos chosen for it (popular and unpopular). No LLM is called."""

        def build() -> dict[str, Any]:
            chosen = settings.model_copy(
                update={"mode": "pe", "n_refs": n_refs, "ratio": ratio, "num_tags": num_tags}
            )
            Settings.model_validate(chosen.model_dump())  # range checks
            prompt = Pipeline(chosen).prompt(query)
            return {
                "messages": [m.model_dump() for m in prompt.messages],
                "references": [r.model_dump() for r in prompt.references],
                "enhancement": prompt.settings,
            }

        try:
            return await anyio.to_thread.run_sync(build)
        except PopcornError as exc:
            raise fail(exc) from None
        except ValueError as exc:
            raise ToolError(f"invalid arguments: {exc}") from None

    @server.tool()
    def list_runs(search: str = "", limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """Runs newest first (the studio's history), filtered by `search` in the query or
        title."""
        return jobs.history(search=search, limit=max(1, min(limit, 200)), offset=max(0, offset))

    @server.tool()
    def get_run(run_id: str) -> dict[str, Any]:
        """One run: state, idea, score, variants, notes and the paths of its files."""
        return run_view(run_id)

    server.jobs = jobs  # for callers that stop it
    return server


def serve_stdio(settings: Settings) -> None:
    server = build_server(settings)
    try:
        server.run("stdio")
    finally:
        server.jobs.stop()


__all__ = ["build_server", "serve_stdio", "Path"]
