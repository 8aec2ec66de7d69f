"""The studio's read side: a job as the API shows it, the history with search, a job's
run folder and its ready-to-post package (a mixin of :class:`~llmpopcorn.web.jobs.JobManager`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmpopcorn.web.job import KIND, TERMINAL
from llmpopcorn.web.requests import RunRequest
from llmpopcorn.web.runfiles import only_run_dir, package_bytes


class JobViews:
    """Reading jobs back from the run store (the manager supplies ``store()``,
    ``jobs``, ``_lock``, ``_job_dir``, ``queue_position``, ``base``, ``_package_lock``)."""

    def row(self, job_id: str) -> dict[str, Any] | None:
        return self.store().get(f"{KIND}:{job_id}")

    def view(self, row: dict[str, Any]) -> dict[str, Any]:
        """A job as the API shows it (no paths, no key)."""
        job_id = row["key"].split(":", 1)[1]
        result = row["result"] or {}
        with self._lock:
            job = self.jobs.get(job_id)
        if row["status"] == "running":
            state = job.state if job is not None else "running"
        elif row["status"] == "pending":
            state = "queued"  # given back by a stopped server: the next start runs it
        else:
            state = result.get("state") or ("done" if row["status"] == "ok" else "failed")
        labels = row["labels"]
        out = {
            "id": job_id,
            "state": state,
            "query": labels.get("query"),
            "mode": labels.get("mode"),
            "request": labels.get("request", {}),
            "submitted": row["created"],
            "finished": row["finished"],
            "seconds": row["seconds"],
            "error": row["error"],
            "hint": result.get("hint"),
            "title": result.get("title"),
            "score": result.get("score"),
            "category": result.get("category"),
            "stages": result.get("timings") or {},
            "run_id": result.get("run_id"),
            "has_clip": bool(result.get("has_clip")),
            "retry_of": labels.get("retry_of"),
        }
        out["retryable"] = state in TERMINAL
        if row["status"] == "pending":
            out["error"] = None
        if job is not None:
            out["position"] = self.queue_position(job)
            out["stage"] = next(
                (e["stage"] for e in reversed(job.events) if e["type"] == "stage"), None
            )
        return out

    def history(
        self, *, search: str = "", state: str = "", limit: int = 20, offset: int = 0
    ) -> dict[str, Any]:
        rows = self.store().items(kind=KIND)
        rows.reverse()  # newest first
        views = [self.view(row) for row in rows]
        if search:
            needle = search.casefold()
            views = [
                v
                for v in views
                if needle in (v["query"] or "").casefold()
                or needle in (v["title"] or "").casefold()
            ]
        if state:
            views = [v for v in views if v["state"] == state]
        return {
            "total": len(views),
            "offset": offset,
            "limit": limit,
            "runs": views[offset : offset + limit],
        }

    def run_dir(self, job_id: str) -> Path | None:
        row = self.row(job_id)
        if row is None:
            return None
        if row["run_dir"]:
            return Path(row["run_dir"])
        return only_run_dir(self._job_dir(job_id))

    def package(self, job_id: str, scrubber: Callable[[Any], Any]) -> bytes:
        """The ready-to-post zip of a finished run, plus its record.json (no server paths)."""
        run_dir = self.run_dir(job_id)
        if run_dir is None:
            raise FileNotFoundError(job_id)
        with self._package_lock:
            return package_bytes(run_dir, self.base, scrubber)


def request_from_labels(labels: dict[str, Any], *, keep_typed: bool = False) -> RunRequest | None:
    """The request a job was submitted with, from its stored labels (never a key: a key
    typed into the page is not stored). None when it is missing, or when it had a typed
    key and ``keep_typed`` is false (running it without that key would use another)."""
    data = dict(labels.get("request") or {})
    if not data:
        return None
    typed = data.pop("llm_api_key", None) is not None
    if typed and not keep_typed:
        return None
    return RunRequest(**data)
