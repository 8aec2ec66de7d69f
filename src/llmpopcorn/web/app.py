"""The studio: a page, a REST API and the run files, all over one job queue (:mod:`.jobs`).

Routes (the OpenAPI page is ``/docs`` on loopback):

- ``GET /``: the page (plain JS modules under ``/static``; no build step).
- ``GET /api/backends``: what can run here and why not (the table of ``popcorn backends``).
- ``GET|POST /api/data``: the data folder's status; set it (PE and scoring need it).
- ``POST /api/runs``: a run request -> 202 ``{"id", "state"}`` at once.
- ``GET /api/runs``: history (``q``, ``state``, ``limit``, ``offset``), newest first.
- ``GET /api/runs/{id}``: status, and the record once there is one.
- ``GET /api/runs/{id}/events``: server-sent events (``state``, ``stage``).
- ``DELETE /api/runs/{id}``: cancel a queued or running job.
- ``POST /api/runs/{id}/retry``: run a finished (failed, cancelled, interrupted, done) job
  again as a new job with the same request -> 202 ``{"id", "state", "retry_of"}``; a key
  typed into the page is not kept, so the body may carry it again (``llm_api_key``).
- ``GET /api/runs/{id}/files/{name}``: ``cover.png``, ``clip.mp4``, ``record.json``,
  ``report.html`` of a run, by id only.
- ``GET /api/runs/{id}/package``: the ready-to-post zip.
- ``POST /api/session``: with the token, sets it as a cookie (for media and event streams).

Safety: loopback by default, any other bind needs a token on every API call
(:class:`.safety.Guard`); bodies over 64 KiB are refused; no answer carries a server path
(:class:`.safety.PathScrubber`); errors are ``{"error", "hint"}`` and never echo input;
every JSON answer writes invisible/bidi characters (in the LLM's raw replies) as ``\\uXXXX``
escapes, like record.json on disk (:func:`llmpopcorn.core.paths.escape_unsafe_json`).
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

from llmpopcorn.core.errors import ConfigError, PopcornError, require
from llmpopcorn.core.settings import Settings
from llmpopcorn.web.jobs import LIVE, JobManager, progress_pipeline
from llmpopcorn.web.routes import Studio, page_routes, run_routes, setup_routes
from llmpopcorn.web.safety import (
    LOOPBACK_HOSTS,
    Guard,
    PathScrubber,
    default_roots,
    is_loopback,
)


def create_app(
    settings: Settings | None = None,
    *,
    pipeline_factory=None,
    token: str | None = None,
    host: str = "127.0.0.1",
    docs: bool | None = None,
    draft_workers: int = 2,
    cache_size: int = 2,
    allowed_hosts: list[str] | None = None,
    owner: str | None = None,
) -> Any:
    """Build the FastAPI app. ``pipeline_factory(settings)`` makes a Pipeline (tests pass
    fakes). Without a token, only loopback Host names (plus ``allowed_hosts``) are served."""
    fastapi = require("fastapi", "web", "the web UI")
    from fastapi.exceptions import RequestValidationError

    base = settings or Settings.resolve()
    if token is not None and len(token) < 8:
        raise ConfigError("the access token is too short", "use at least 8 characters")
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without an access token: anyone who can reach it "
            "could run jobs",
            "pass --token TOKEN (or set POPCORN_TOKEN), or keep --host 127.0.0.1",
        )
    jobs = JobManager(
        base,
        pipeline_factory=pipeline_factory or progress_pipeline,
        draft_workers=draft_workers,
        cache_size=cache_size,
        owner=owner,
    )
    scrubber = PathScrubber(default_roots(base))
    show_docs = is_loopback(host) if docs is None else docs

    @asynccontextmanager
    async def lifespan(_app):
        jobs.start()
        try:
            yield
        finally:
            await asyncio.to_thread(jobs.stop)

    app = fastapi.FastAPI(
        title="LLMPopcorn studio",
        description="Make micro-video ideas, covers and clips, scored for popularity.",
        docs_url="/docs" if show_docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if show_docs else None,
        lifespan=lifespan,
    )
    app.state.jobs = jobs
    app.state.scrub = scrubber
    hosts = None
    if token is None:
        hosts = set(LOOPBACK_HOSTS) | {host} | set(allowed_hosts or ())
    app.add_middleware(Guard, token=token, allowed_hosts=hosts)

    studio = Studio(fastapi, jobs, scrubber, token)
    answer = studio.answer

    @app.exception_handler(PopcornError)
    async def _popcorn_error(_request, exc: PopcornError):
        return answer({"error": exc.message, "hint": exc.hint}, 400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        # never echo the input back: it may hold a typed key or a large body
        fields = [
            {"field": ".".join(str(x) for x in err.get("loc", ())[1:]), "problem": err.get("msg")}
            for err in exc.errors()
        ]
        return answer(
            {"error": "invalid request", "hint": "fix the fields listed", "fields": fields}, 422
        )

    for routes in (page_routes, setup_routes, run_routes):
        app.include_router(routes(studio))
    return app


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    token: str | None = None,
    draft_workers: int = 2,
) -> None:
    uvicorn = require("uvicorn", "web", "the web UI")
    app = create_app(settings, token=token, host=host, draft_workers=draft_workers)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


__all__ = ["create_app", "serve", "LIVE"]
