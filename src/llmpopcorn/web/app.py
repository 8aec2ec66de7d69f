"""The web app: a form, a JSON API and the run reports, all over one Pipeline per setup.

Routes
- ``GET /``: the page (a form that calls the API and shows the result).
- ``GET /api/backends``: the backend table of ``popcorn backends``.
- ``POST /api/make``: ``{"query", "mode", "llm", "variants", "seed"}`` -> the run record.
- ``GET /runs/{run_id}/report``, ``/runs/{run_id}/{cover.png|clip.mp4|record.json}``.

Generations run one at a time (model backends are not thread-safe). Errors come back
as ``{"error", "hint"}`` with status 400; no path outside the output folder can be read.
"""

from __future__ import annotations

import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..errors import PopcornError, require
from ..pipeline import Pipeline
from ..settings import Settings

_RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
_FILES = {
    "cover.png": "image/png",
    "clip.mp4": "video/mp4",
    "record.json": "application/json",
    "report": "text/html",
}


class MakeRequest(BaseModel):
    """The body of ``POST /api/make``."""

    query: str = Field(max_length=10_000)
    mode: Literal["basic", "pe"] = "basic"
    llm: str | None = Field(None, max_length=100)
    variants: int = Field(1, ge=1, le=10)
    seed: int | None = None


def create_app(settings: Settings | None = None, *, pipeline_factory=Pipeline) -> Any:
    """Build the FastAPI app; ``pipeline_factory(settings)`` makes a Pipeline (tests pass fakes)."""
    fastapi = require("fastapi", "web", "the web UI")
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    base = settings or Settings.resolve()
    out_root = Path(base.out_dir).expanduser().resolve()
    pipelines: dict[tuple, Pipeline] = {}
    lock = threading.Lock()
    app = fastapi.FastAPI(title="LLMPopcorn", docs_url=None, redoc_url=None)

    @app.exception_handler(PopcornError)
    async def _popcorn_error(_request, exc: PopcornError):
        return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return resources.files(__package__).joinpath("index.html").read_text(encoding="utf-8")

    @app.get("/api/backends")
    def backends() -> dict:
        from ..registry import backend_table

        return backend_table(base)

    @app.post("/api/make")
    def make(body: MakeRequest) -> dict:
        update = {"mode": body.mode, "variants": body.variants}
        if body.llm:
            update["llm"] = body.llm
        key = tuple(sorted(update.items()))
        with lock:
            pipeline = pipelines.get(key)
            if pipeline is None:
                pipeline = pipeline_factory(Settings(**{**base.model_dump(), **update}))
                pipelines[key] = pipeline
            record = pipeline.make(body.query, out_dir=out_root, seed=body.seed)
        data = record.model_dump(mode="json")
        data["run_dir"] = Path(record.run_dir).name  # do not reveal server paths
        return data

    @app.get("/runs/{run_id}/{name}")
    def run_file(run_id: str, name: str):
        if not _RUN_ID.match(run_id) or name not in _FILES:
            return JSONResponse({"error": "not found"}, status_code=404)
        matches = [p for p in out_root.glob(f"{run_id}-*") if p.parent == out_root]
        path = matches[0] / ("report.html" if name == "report" else name) if matches else None
        if path is None or not path.is_file():
            return JSONResponse({"error": "not found"}, status_code=404)
        return FileResponse(path, media_type=_FILES[name])

    return app


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8765) -> None:
    uvicorn = require("uvicorn", "web", "the web UI")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
