"""The studio's routes, grouped by what they serve (:func:`llmpopcorn.web.app.create_app`
mounts them): the page, what can run and the data folder, and runs."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from llmpopcorn.core.redact import scrub
from llmpopcorn.web.jobs import TERMINAL, JobBusy, JobManager
from llmpopcorn.web.requests import RunRequest
from llmpopcorn.web.safety import TOKEN_COOKIE, PathScrubber, file_inside

_FILES = {
    "cover.png": "image/png",
    "clip.mp4": "video/mp4",
    "record.json": "application/json",
    "report.html": "text/html; charset=utf-8",
}
_STATIC = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}
#: seconds between checks of a job's events in a stream
EVENT_POLL_S = 0.2


class DataFolder(BaseModel):
    path: str = Field(max_length=1_000)


class RetryBody(BaseModel):
    """Optional body of a retry: the key typed into the page again (never stored)."""

    model_config = ConfigDict(extra="forbid")

    llm_api_key: SecretStr | None = Field(None, max_length=500)


@dataclass
class Studio:
    """What every route shares: the job manager, the path scrubber, the access token."""

    fastapi: Any
    jobs: JobManager
    scrubber: PathScrubber
    token: str | None

    def router(self) -> Any:
        return self.fastapi.APIRouter()

    def answer(self, data: Any, status: int = 200) -> Any:
        """JSON with no server path, no secret, and invisible characters escaped."""
        from fastapi.responses import Response

        text = json.dumps(data, default=str)
        return Response(
            safe_json(self.scrubber(json.loads(scrub(text)))),
            status,
            media_type="application/json",
        )

    def not_found(self, what: str = "run") -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse(
            {"error": f"no such {what}", "hint": "list runs with GET /api/runs"}, status_code=404
        )


def safe_json(data: Any) -> str:
    """``data`` as JSON text safe to print: the LLM's raw replies are kept verbatim, but
    every invisible or bidi character is a ``\\uXXXX`` escape (as in record.json on disk)."""
    from llmpopcorn.core.paths import escape_unsafe_json

    return escape_unsafe_json(json.dumps(data, ensure_ascii=False, default=str))


def page_routes(studio: Studio) -> Any:
    """The page, its static files, and the session cookie for media and event streams."""
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    router, not_found = studio.router(), studio.not_found
    token = studio.token

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return resources.files(__package__).joinpath("static/index.html").read_text("utf-8")

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        suffix = Path(name).suffix
        if "/" in name or "\\" in name or name.startswith(".") or suffix not in _STATIC:
            return not_found("file")
        item = resources.files(__package__).joinpath("static", name)
        if not item.is_file():
            return not_found("file")
        return Response(item.read_bytes(), media_type=_STATIC[suffix])

    @router.get("/favicon.ico", include_in_schema=False)
    def favicon():  # browsers ask for it whatever the page says
        return static("favicon.svg")

    @router.post("/api/session", include_in_schema=False)
    def session():
        response = JSONResponse({"ok": True})
        if token is not None:  # the Guard let this through, so the token was right
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    return router


def setup_routes(studio: Studio) -> Any:
    """What can run here, and the data folder."""
    router, answer = studio.router(), studio.answer
    jobs, scrubber = studio.jobs, studio.scrubber

    @router.get("/api/backends", summary="What can run here, and why not")
    def backends(check: bool = False):
        """``check``: also contact the local servers the backends need (at most 2 s, all at
        once; no key sent): they are then ``reachable`` or ``unreachable``."""
        from llmpopcorn.core.registry import backend_table

        table = backend_table(jobs.base, check=check)
        defaults = {
            k: getattr(jobs.base, k)
            for k in ("llm", "llm_model", "image", "video", "mode", "seed", "variants")
        }
        defaults.update(
            {k: getattr(jobs.base, k) for k in ("num_tags", "ratio", "n_refs", "category_match")}
        )
        defaults["pe_pool"] = jobs.base.pe_pool
        defaults["score"] = jobs.base.score
        defaults["server_key"] = jobs.base.llm_api_key is not None
        return answer({"backends": table, "defaults": defaults, **table})

    @router.get("/api/data", summary="The data folder's status")
    def data_status():
        return answer(_data_status(jobs.base.data_dir))

    @router.post("/api/data", summary="Set the data folder (for PE and scoring)")
    def set_data(body: DataFolder):
        path = Path(body.path).expanduser()
        status = _data_status(path)
        if not status["ok"]:
            return answer({"error": status["reason"], "hint": status["hint"]}, 400)
        jobs.base = jobs.base.model_copy(update={"data_dir": path})
        scrubber.add("<data>", path)
        return answer(status)

    return router


def run_routes(studio: Studio) -> Any:
    """Runs: queue, history, status, cancel, retry, events, files and the package."""
    fastapi = studio.fastapi
    from fastapi.responses import Response, StreamingResponse

    router, answer, not_found = studio.router(), studio.answer, studio.not_found
    jobs, scrubber = studio.jobs, studio.scrubber

    @router.post("/api/runs", status_code=202, summary="Queue a run")
    async def submit(body: RunRequest):
        job = await asyncio.to_thread(jobs.submit, body)  # store writes off the event loop
        return answer({"id": job.id, "state": job.state, "lane": job.lane}, 202)

    @router.get("/api/runs", summary="History: newest first, with search and paging")
    async def history(
        q: str = fastapi.Query("", max_length=200),
        state: str = fastapi.Query("", max_length=20),
        limit: int = fastapi.Query(20, ge=1, le=200),
        offset: int = fastapi.Query(0, ge=0),
    ):
        return answer(jobs.history(search=q, state=state, limit=limit, offset=offset))

    @router.get("/api/runs/{job_id}", summary="A run's status and record")
    async def get_run(job_id: str):
        row = jobs.row(job_id)
        if row is None:
            return not_found()
        view = jobs.view(row)
        view["record"] = _record(jobs, job_id)
        return answer(view)

    @router.delete("/api/runs/{job_id}", summary="Cancel a queued or running run")
    async def cancel(job_id: str):
        state = jobs.cancel(job_id)
        if state is None:
            return not_found()
        return answer({"id": job_id, "state": state})

    @router.post(
        "/api/runs/{job_id}/retry", status_code=202, summary="Run a finished run again (new job)"
    )
    async def retry(job_id: str, body: RetryBody | None = None):
        key = body.llm_api_key if body is not None else None
        try:
            job = await asyncio.to_thread(jobs.retry, job_id, key)
        except JobBusy as exc:
            return answer({"error": exc.message, "hint": exc.hint}, 409)
        if job is None:
            return not_found()
        return answer({"id": job.id, "state": job.state, "lane": job.lane, "retry_of": job_id}, 202)

    @router.get("/api/runs/{job_id}/events", summary="Stage progress as server-sent events")
    async def events(job_id: str):
        row = jobs.row(job_id)
        if row is None:
            return not_found()
        job = jobs.jobs.get(job_id)

        async def stream():
            if job is None:  # finished before this server started: replay from the store
                view = jobs.view(row)
                for number, stage in enumerate(view["stages"]):
                    yield _sse("stage", {"seq": number, "stage": stage, "replayed": True})
                yield _sse("state", {"state": view["state"], "error": view["error"]})
                return
            sent, quiet = 0, time.monotonic()
            while True:
                batch = job.events[sent:]
                for event in batch:
                    yield _sse(event["type"], scrubber(event))
                sent += len(batch)
                if job.state in TERMINAL and sent >= len(job.events):
                    return
                if time.monotonic() - quiet > 15:
                    quiet = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(EVENT_POLL_S)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    @router.get("/api/runs/{job_id}/files/{name}", summary="A run's cover, clip, record or report")
    def run_file(job_id: str, name: str):
        if name not in _FILES:
            return not_found("file")
        run_dir = jobs.run_dir(job_id)
        path = file_inside(jobs.out_root, run_dir, name) if run_dir else None
        if path is None:
            return not_found("file")
        if name == "record.json":
            record = _record(jobs, job_id)
            if record is None:  # the file is there (checked above) but not a run record
                return answer(
                    {
                        "error": "this run's record.json is damaged (not a valid run record)",
                        "hint": "the run folder was changed or cut short; run it again (retry)",
                    },
                    409,
                )
            return answer(record)
        if name == "report.html":
            return Response(scrubber.text(path.read_text("utf-8")), media_type=_FILES[name])
        return Response(path.read_bytes(), media_type=_FILES[name])

    @router.get("/api/runs/{job_id}/package", summary="The ready-to-post zip")
    def package(job_id: str):
        row = jobs.row(job_id)
        if row is None:
            return not_found()
        if jobs.view(row)["state"] != "done":
            return answer(
                {"error": "this run has not finished", "hint": "wait for state 'done'"}, 409
            )
        run_dir = jobs.run_dir(job_id)
        if run_dir is None or file_inside(jobs.out_root, run_dir, "record.json") is None:
            return not_found("file")
        data = jobs.package(job_id, scrubber)
        name = f"popcorn-{job_id}.zip"
        return Response(
            data,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return router


def _sse(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


def _record(jobs: JobManager, job_id: str) -> dict | None:
    """The run's record (server paths and secrets are taken out by the caller's answer)."""
    from llmpopcorn.pipeline.report import load_record

    run_dir = jobs.run_dir(job_id)
    if run_dir is None or file_inside(jobs.out_root, run_dir, "record.json") is None:
        return None
    try:
        data = load_record(run_dir).model_dump(mode="json")
    except (OSError, ValueError):
        return None
    data["run_dir"] = run_dir.name
    return data


def _data_status(path: Path | None) -> dict[str, Any]:
    """Whether ``path`` is a usable data folder; never shows the path itself."""
    if path is None:
        return {
            "ok": False,
            "configured": False,
            "reason": "no data folder is set: PE mode and the corpus-based scorer need one",
            "hint": "set it here (the folder holding microlens/videos.csv), or start the "
            "server with --data DIR / POPCORN_DATA",
        }
    videos = Path(path).expanduser() / "microlens" / "videos.csv"
    if not videos.is_file():
        return {
            "ok": False,
            "configured": True,
            "reason": "that folder has no microlens/videos.csv",
            "hint": "point at the folder that holds microlens/videos.csv",
        }
    size = videos.stat().st_size
    return {"ok": True, "configured": True, "reason": "", "hint": "", "videos_csv_bytes": size}
