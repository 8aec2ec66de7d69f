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
API does not). Errors come back as tool errors with the message and its hint, never a
traceback. Arguments have the studio API's caps (:mod:`.validate`: query length, at most
200 references, run ids checked against their format and never echoed), and every string
of an answer carries invisible and bidi characters as visible ``\\uXXXX`` escapes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from llmpopcorn.core.errors import PopcornError, require
from llmpopcorn.core.settings import Settings
from llmpopcorn.mcp.validate import (
    MAX_SEARCH,
    ArgumentError,
    check_page,
    check_run_id,
    check_text,
    check_wait,
    escaped,
    run_request,
)
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.pipeline.refine import refinement_view

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "LLMPopcorn turns a short query into a micro-video idea (title, cover prompt, video "
    "prompt), renders a cover and a 3-second clip, and predicts its popularity (log2 of the "
    "comment count) from similar MicroLens videos. Use make_run to create one, score_idea "
    "to compare titles quickly, build_pe_prompt to see the retrieval-augmented prompt."
)


def setting_arg(name: str) -> Any:
    """The schema of a tool argument that is a run setting: the setting's own help (one
    source for the CLI's --help, the studio's API and these tools)."""
    return Field(description=Settings.model_fields[name].description)


def build_server(
    settings: Settings, *, pipeline_factory: Callable[[Settings], Pipeline] | None = None
) -> Any:
    """The MCP server over ``settings`` (its tools share one job queue). Arguments are
    checked like the studio's (:mod:`.validate`); answers escape invisible characters."""
    require("mcp", "mcp", "the MCP server")
    from llmpopcorn.web.jobs import progress_pipeline

    pipeline_factory = pipeline_factory or progress_pipeline
    import anyio
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from llmpopcorn.web.jobs import TERMINAL, JobManager

    jobs = JobManager(settings, pipeline_factory=pipeline_factory, draft_workers=1, origin="mcp")
    server = MCPServer("llmpopcorn", instructions=INSTRUCTIONS)
    scorers: dict[str, Any] = {}

    @contextmanager
    def tool_errors(tool: str) -> Iterator[None]:
        """Every failure as a tool error with its hint: never a traceback."""
        try:
            yield
        except ToolError:
            raise
        except ArgumentError as exc:
            raise ToolError(str(exc)) from None
        except PopcornError as exc:
            raise ToolError(f"{exc.message} (hint: {exc.hint})") from None
        except ValueError as exc:
            raise ToolError(f"invalid arguments: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - reported as such, logged without a trace
            log.warning("mcp %s failed: %s", tool, type(exc).__name__)
            log.debug("mcp %s failed", tool, exc_info=True)
            raise ToolError(
                f"{tool} failed unexpectedly ({type(exc).__name__}) (hint: see the server "
                "log; report it if it looks like a bug)"
            ) from None

    def run_view(job_id: str) -> dict[str, Any]:
        check_run_id(job_id)
        row = jobs.row(job_id)
        if row is None:
            raise ToolError("no run with that id (hint: list_runs shows the ids)")
        view = jobs.view(row)
        run_dir = jobs.run_dir(job_id)
        if run_dir is not None and (run_dir / "record.json").is_file():
            from llmpopcorn.pipeline.package_files import read_record

            record = read_record(run_dir)  # a damaged record: a DataError with a hint
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
        return escaped(view)

    @server.tool()
    async def make_run(
        query: str,
        mode: Annotated[str, setting_arg("mode")] = "basic",
        seed: Annotated[int | None, setting_arg("seed")] = None,
        variants: Annotated[int, setting_arg("variants")] = 1,
        render: Annotated[bool, setting_arg("render")] = True,
        refine: Annotated[int, setting_arg("refine")] = 0,
        wait_seconds: float = 600.0,
    ) -> dict[str, Any]:
        """Make a micro-video for `query`: idea, cover, 3-second clip and predicted
        popularity. mode is 'basic' or 'pe' (retrieval-augmented, needs the data folder).
        refine: rounds in which the LLM sees the reward judge's score and explanation and
        writes an improved idea (the best by the reward judge is kept; every round is also
        scored by an independent evaluation judge). Waits up to wait_seconds; a run still
        going is returned with its state."""
        with tool_errors("make_run"):
            wait = check_wait(wait_seconds)
            request = run_request(
                query=query, mode=mode, seed=seed, variants=variants, render=render, refine=refine
            )
            jobs.start()
            job = jobs.submit(request)
        deadline = time.monotonic() + wait
        while job.state not in TERMINAL and time.monotonic() < deadline:
            await anyio.sleep(0.1)
        with tool_errors("make_run"):
            return run_view(job.id)

    @server.tool()
    async def score_idea(
        title: str, query: str = "", cover_prompt: str = "", video_prompt: str = ""
    ) -> dict[str, Any]:
        """Predicted popularity of an idea (log2 comments, expected comments, interval,
        percentile) and the similar videos that explain it."""
        from llmpopcorn.core.types import Idea

        with tool_errors("score_idea"):
            for name, value in (
                ("title", title),
                ("query", query),
                ("cover_prompt", cover_prompt),
                ("video_prompt", video_prompt),
            ):
                check_text(name, value)

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
            return escaped(scorer.score(idea, query=query or title).model_dump())

        with tool_errors("score_idea"):
            return await anyio.to_thread.run_sync(score)

    @server.tool()
    async def build_pe_prompt(
        query: str,
        n_refs: Annotated[int, setting_arg("n_refs")] = 50,
        ratio: Annotated[float, setting_arg("ratio")] = 0.1,
        num_tags: Annotated[int, setting_arg("num_tags")] = 1,
    ) -> dict[str, Any]:
        """The prompt-enhancement (PE) messages for `query`, with the MicroLens reference
        videos chosen for it (popular and unpopular). No LLM is called."""
        with tool_errors("build_pe_prompt"):  # the studio's caps: at most 200 references
            run_request(query=query, mode="pe", n_refs=n_refs, ratio=ratio, num_tags=num_tags)

        def build() -> dict[str, Any]:
            chosen = settings.model_copy(
                update={"mode": "pe", "n_refs": n_refs, "ratio": ratio, "num_tags": num_tags}
            )
            Settings.model_validate(chosen.model_dump())  # range checks
            prompt = Pipeline(chosen).prompt(query)
            return escaped(
                {
                    "messages": [m.model_dump() for m in prompt.messages],
                    "references": [r.model_dump() for r in prompt.references],
                    "enhancement": prompt.settings,
                }
            )

        with tool_errors("build_pe_prompt"):
            return await anyio.to_thread.run_sync(build)

    @server.tool()
    def list_runs(search: str = "", limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """Runs newest first (the studio's history), filtered by `search` in the query or
        title."""
        with tool_errors("list_runs"):
            check_text("search", search, MAX_SEARCH)
            limit, offset = check_page(limit, offset)
            return escaped(jobs.history(search=search, limit=limit, offset=offset))

    @server.tool()
    def get_run(run_id: str) -> dict[str, Any]:
        """One run: state, idea, score, variants, notes and the paths of its files."""
        with tool_errors("get_run"):
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
