"""The web job queue: runs are rows of the one run store (``kind="web"``), waiting jobs sit
in a queue (never in a request thread), and a fixed set of worker threads runs them.

* **Lanes.** Jobs that touch a model device (diffusers renderers, a local LLM, hosted
  generators) go to the ``device`` lane: one worker, jobs in submission order. CPU draft
  jobs (draft renderers or no rendering, a remote or no LLM) go to the ``draft`` lane, a
  bounded few at a time (``draft_workers``).
* **Pipelines** are cached per worker, least recently used first out, at most
  ``cache_size`` each: a worker never shares a pipeline with another thread, and memory
  stays bounded however many setting combinations arrive.
* **Store.** A job is claimed in the store at submission (status ``running`` with this
  server as owner; the API says ``queued`` until a worker takes it), with its request in
  its labels (every field but a typed key); a worker adds ``started`` to the labels when
  it takes the job (and only while the claim is still this server's), and finishes it
  with ``ok`` or ``failed``; the finer state (done, failed, cancelled, interrupted) is the
  ``state`` of its result. Leases are renewed by a heartbeat while the job is alive.
* **Restart.** On shutdown, jobs still queued are given back to the store (``pending``)
  and running ones are recorded as ``interrupted``. At start, the server claims the web
  jobs that wait: pending ones, and those whose owner is gone (a crash, a kill) or whose
  lease ran out. One that never started is queued again, in submission order (unless its
  request needed a key typed into the page: that key lived only in the old process, so
  it is ``interrupted``, to be retried with the key); one that had started is
  ``interrupted``, in the store and in its ``record.json``. The claim decides, so two
  servers never run the same job. Any finished job can be run again as a new job with
  the same request (:meth:`JobManager.retry`).
* **Cancel.** A queued job is dropped from its queue; a running one stops at its next
  stage boundary, between LLM calls, or after the current denoising step of a diffusers
  render (:mod:`llmpopcorn.backends.diffusion.cancel`); a draft render in progress
  finishes first.
"""

from __future__ import annotations

import itertools
import logging
import queue
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import ConfigError, PopcornError
from llmpopcorn.core.redact import scrub
from llmpopcorn.core.registry import registry
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import utcnow
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.runs.store import Store, new_owner
from llmpopcorn.web.history import JobViews, request_from_labels
from llmpopcorn.web.job import (
    DEFAULT_LEASE_S,
    GROUP,
    INTERRUPTED,
    KEY_LOST,
    KEY_LOST_HINT,
    KIND,
    LIVE,
    MAX_ERROR_CHARS,
    RECENT_JOBS,
    STORE_NAME,
    TERMINAL,
    WEB_FOLDER,
    Job,
    JobBusy,
    JobStopped,
)
from llmpopcorn.web.progress import (
    ProgressLLM,
    index_listener,
    lower_priority,
    progress_pipeline,
    variant_listener,
)
from llmpopcorn.web.requests import RunRequest, settings_for, settings_key
from llmpopcorn.web.runfiles import mark_record, only_run_dir, summary

log = logging.getLogger(__name__)


def lane_for(settings: Settings) -> str:
    """``draft`` for CPU draft work, ``device`` for anything that holds a model device."""
    draft_render = not settings.render or (settings.image == "draft" and settings.video == "draft")
    local_llm = getattr(registry.get("llm", settings.llm), "holds_device", False)
    return "draft" if draft_render and not local_llm else "device"


class JobManager(JobViews):
    """Queues, workers and the store for web runs (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        pipeline_factory: Callable[[Settings], Pipeline] = progress_pipeline,
        draft_workers: int = 2,
        cache_size: int = 2,
        lease_s: float = DEFAULT_LEASE_S,
        owner: str | None = None,
        origin: str = "web",
    ):
        #: who submits this manager's jobs (``web``: the studio; ``mcp``: an agent's
        #: session): at start a manager takes over only the waiting jobs of its origin
        self.origin = origin
        self.base = settings
        self.out_root = Path(settings.out_dir).expanduser().resolve()
        self.store_path = self.out_root / STORE_NAME
        self.factory = pipeline_factory
        self.cache_size = max(1, cache_size)
        self.lease_s = lease_s
        self.owner = owner or new_owner()
        self.workers_per_lane = {"draft": max(1, draft_workers), "device": 1}
        self.queues: dict[str, queue.Queue] = {
            lane: queue.Queue() for lane in self.workers_per_lane
        }
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.cache_sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._started = False
        self._package_lock = threading.Lock()
        self._seq = itertools.count()
        self.out_root.mkdir(parents=True, exist_ok=True)
        self.store()  # open (and migrate) now: a corrupt store fails at start, not later

    # -- the store, one connection per thread --------------------------------------------

    def store(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = Store(self.store_path, owner=self.owner)
            self._local.store = store
        return store

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.recover()
        for lane, count in self.workers_per_lane.items():
            for number in range(count):
                name = f"popcorn-{lane}-{number}"
                thread = threading.Thread(target=self._work, args=(lane, name), name=name)
                thread.daemon = True
                thread.start()
                self._threads.append(thread)
        beat = threading.Thread(target=self._heartbeat, name="popcorn-heartbeat", daemon=True)
        beat.start()
        self._threads.append(beat)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers: jobs still queued are given back to the store (the next
        server runs them), running ones are recorded as interrupted."""
        self._stopping.set()
        with self._lock:
            waiting = [j for j in self.jobs.values() if j.state == "queued" and not j.finishing]
            for job in waiting:
                job.finishing = True  # no worker, cancel or finish touches it from now on
            live = [job for job in self.jobs.values() if job.state in LIVE and not job.finishing]
        for job in waiting:
            try:
                self.store().release(job.key)
            except PopcornError:  # a full disk: its lease runs out and the next start takes it
                log.warning("could not give queued job %s back to the store", job.id)
        for job in live:
            job.stop = ("interrupted", INTERRUPTED)
        for lane, count in self.workers_per_lane.items():
            for _ in range(count):
                self.queues[lane].put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for job in live:
            if job.state in LIVE:
                self._finish(job, "interrupted", error=INTERRUPTED)

    def recover(self) -> int:
        """Take over the web jobs that wait for a server (see the module docstring): queue
        again, in submission order, those that never started; mark the others interrupted.
        Returns how many jobs were taken over."""
        store, count = self.store(), 0
        known = {job.key for job in self.jobs.values()}
        for row in store.items(kind=KIND):  # oldest first: the original queue order
            if row["status"] not in ("pending", "running") or row["key"] in known:
                continue
            if row["labels"].get("origin", "web") != self.origin:
                continue  # the studio's jobs are not an agent's, and the reverse
            claim = store.claim(
                row["key"],
                kind=KIND,
                group=row["grp"],
                settings_hash=row["settings_hash"],
                labels=row["labels"],
                lease_s=self.lease_s,
            )
            if not claim.claimed:
                continue  # another live server holds it, or took it first
            count += 1
            job_id = row["key"].split(":", 1)[1]
            run_dir = only_run_dir(self._job_dir(job_id))
            if row["labels"].get("started") or run_dir is not None:
                self._end_row(row["key"], run_dir, INTERRUPTED)
                continue
            if not row["labels"].get("request"):  # written before requests were kept
                self._end_row(row["key"], None, INTERRUPTED)
                continue
            try:
                request = request_from_labels(row["labels"])
                if request is None:  # it needed a key typed into the page, now gone
                    self._end_row(row["key"], None, KEY_LOST, hint=KEY_LOST_HINT)
                    continue
                settings = settings_for(self.base, request)
            except (PopcornError, ValueError) as exc:  # the server's settings changed
                message = getattr(exc, "message", None) or f"invalid request: {exc}"
                hint = getattr(exc, "hint", None)
                self._end_row(row["key"], None, message, state="failed", hint=hint)
                continue
            job = Job(id=job_id, request=request, settings=settings, lane=lane_for(settings))
            self._queue(job)
        return count

    def _end_row(
        self,
        key: str,
        run_dir: Path | None,
        error: str,
        *,
        state: str = "interrupted",
        hint: str | None = None,
    ) -> None:
        """Finish a claimed job that has no Job in memory (taken over at start)."""
        if state == "interrupted":
            mark_record(run_dir, error)
        result = {"state": state, **summary(run_dir)}
        if hint:
            result["hint"] = scrub(hint)[:MAX_ERROR_CHARS]
        self.store().finish(
            key,
            status="failed",
            result=result,
            error=scrub(error)[:MAX_ERROR_CHARS],
            run_dir=str(run_dir) if run_dir else None,
        )

    # -- submitting and cancelling -------------------------------------------------------

    def submit(self, request: RunRequest, *, retry_of: str | None = None) -> Job:
        """Validate ``request`` (a bad one raises a PopcornError), record it, queue it."""
        from llmpopcorn.core.paths import clean_query

        clean_query(request.query)  # an empty or unsafe query fails now, with its hint
        settings = settings_for(self.base, request)
        job = Job(id=secrets.token_hex(6), request=request, settings=settings, lane="")
        job.lane = lane_for(settings)
        store = self.store()
        settings_hash = store.put_settings(settings.public())
        labels = {
            "query": request.query,
            "mode": settings.mode,
            "request": request.public(),
            "lane": job.lane,
            "origin": self.origin,
        }
        if retry_of:
            labels["retry_of"] = retry_of
        store.claim(
            job.key,
            kind=KIND,
            group=GROUP,
            settings_hash=settings_hash,
            labels=labels,
            lease_s=self.lease_s,
        )
        self._queue(job)
        return job

    def _queue(self, job: Job) -> None:
        with self._lock:
            job.seq = next(self._seq)
            self.jobs[job.id] = job
            self._trim()
        job.emit("state", state="queued")
        self.queues[job.lane].put(job)

    def retry(self, job_id: str, api_key: Any = None) -> Job | None:
        """Run a finished job again: a new job with the same request (and ``api_key``, a
        key typed again, when given). None when the id is unknown; a job still queued or
        running raises :class:`JobBusy`."""
        row = self.row(job_id)
        if row is None:
            return None
        if self.view(row)["state"] not in TERMINAL:
            raise JobBusy(
                "this run is still queued or running",
                "wait for it to finish (or cancel it), then run it again",
            )
        request = request_from_labels(row["labels"], keep_typed=True)
        if request is None:
            raise ConfigError("this run's request was not recorded", "submit it again")
        if api_key is not None:
            request = request.model_copy(update={"llm_api_key": api_key})
        return self.submit(request, retry_of=job_id)

    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued or running job; returns its state after the request (None when
        the id is unknown)."""
        with self._lock:
            job = self.jobs.get(job_id)
        if job is None or job.state in TERMINAL:
            row = self.store().get(f"{KIND}:{job_id}")
            if row is not None and row["status"] == "pending":  # queued for the next start
                claim = self.store().claim(
                    row["key"],
                    kind=KIND,
                    group=row["grp"],
                    settings_hash=row["settings_hash"],
                    lease_s=self.lease_s,
                )
                if claim.claimed:
                    self._end_row(row["key"], None, "cancelled by the user", state="cancelled")
                    row = self.store().get(row["key"])
            return None if row is None else self.view(row)["state"]
        job.stop = ("cancelled", "cancelled by the user")
        with self._lock:
            waiting = job.state == "queued" and not job.finishing
        if waiting:
            self._finish(job, "cancelled", error="cancelled by the user")
        return job.state if job.state in TERMINAL else "cancelling"

    def queue_position(self, job: Job) -> int | None:
        if job.state != "queued":
            return None
        with self._lock:
            ahead = [
                j
                for j in self.jobs.values()
                if j.lane == job.lane and j.state == "queued" and j.seq < job.seq
            ]
        return len(ahead)

    # -- the workers ---------------------------------------------------------------------

    def _work(self, lane: str, name: str) -> None:
        lower_priority()  # the event loop (page, API, history) stays responsive under jobs
        pipelines: OrderedDict[str, Pipeline] = OrderedDict()
        while True:
            job = self.queues[lane].get()
            if job is None or self._stopping.is_set():
                return
            if job.state != "queued":
                continue  # cancelled while it waited
            try:
                self._run(job, pipelines)
            except BaseException as exc:  # noqa: BLE001 - a worker must outlive any job
                log.exception("web job %s: unexpected failure", job.id)
                if job.state in LIVE:
                    self._finish(job, "failed", error=scrub(str(exc))[:MAX_ERROR_CHARS])
            finally:
                self.cache_sizes[name] = len(pipelines)

    def _pipeline(self, job: Job, pipelines: OrderedDict[str, Pipeline]) -> Pipeline:
        key = settings_key(job.settings)
        pipeline = pipelines.pop(key, None)
        if pipeline is None:
            pipeline = self.factory(job.settings)
        pipelines[key] = pipeline  # most recently used last
        while len(pipelines) > self.cache_size:
            pipelines.popitem(last=False)
        return pipeline

    def _run(self, job: Job, pipelines: OrderedDict[str, Pipeline]) -> None:
        with self._lock:
            if job.state != "queued" or job.finishing:
                return
            job.state = "running"
        store = self.store()
        if not store.update_labels(job.key, {"started": utcnow()}):
            # the claim is no longer ours (another server took this job over while this
            # one was thought gone): never run a job twice
            log.warning("web job %s was taken over by another server; not run here", job.id)
            with self._lock:
                job.state = "interrupted"
                job.finishing = True
                self.jobs.pop(job.id, None)
            job.emit("state", state="interrupted", error="taken over by another server")
            return
        job.emit("state", state="running")
        started = time.perf_counter()

        def check_stop() -> None:
            if job.stop is not None:
                raise JobStopped(*job.stop)

        def on_stage(stage: str) -> None:
            check_stop()
            job.emit("stage", stage=stage)
            store.renew(job.key, self.lease_s)

        state, error, hint = "done", None, None
        progress = None
        try:
            on_stage("start")
            pipeline = self._pipeline(job, pipelines)
            progress = getattr(pipeline, "progress", None)
            if isinstance(progress, ProgressLLM):
                progress.listener = variant_listener(job, pipeline.settings)
            from llmpopcorn.backends.diffusion.cancel import stop_check
            from llmpopcorn.core.progress import progress_listener  # numpy: only once a job runs

            # a diffusers render checks the stop after each denoising step, not only
            # between stages
            with progress_listener(index_listener(job)), stop_check(check_stop):
                pipeline.make(
                    job.request.query,
                    out_dir=self._job_dir(job.id),
                    on_stage=on_stage,
                    seed=job.request.seed,
                )
        except JobStopped as exc:
            state, error = exc.state, str(exc)
        except PopcornError as exc:
            state, error, hint = "failed", exc.message, exc.hint
        except Exception as exc:  # noqa: BLE001 - reported in the record and the store
            state, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            if isinstance(progress, ProgressLLM):
                progress.listener = None
        self._finish(job, state, error=error, hint=hint, seconds=time.perf_counter() - started)

    def _finish(
        self,
        job: Job,
        state: str,
        *,
        error: str | None = None,
        hint: str | None = None,
        seconds: float | None = None,
    ) -> None:
        with self._lock:
            if job.state in TERMINAL or job.finishing:
                return
            job.finishing = True
        run_dir = only_run_dir(self._job_dir(job.id))
        if state in ("cancelled", "interrupted") and run_dir is not None:
            mark_record(run_dir, error or state)
        result = {"state": state, **summary(run_dir)}
        if hint:
            result["hint"] = scrub(hint)[:MAX_ERROR_CHARS]
        self.store().finish(
            job.key,
            status="ok" if state == "done" else "failed",
            result=result,
            error=None if error is None else scrub(error)[:MAX_ERROR_CHARS],
            run_dir=str(run_dir) if run_dir else None,
            seconds=None if seconds is None else round(seconds, 3),
        )
        with self._lock:  # only now: a reader that sees the final state finds its result
            job.state = state
        job.emit("state", state=state, error=result.get("error") or error)

    def _heartbeat(self) -> None:
        every = max(0.5, self.lease_s / 4)
        while not self._stopping.wait(every):
            with self._lock:
                keys = [job.key for job in self.jobs.values() if job.state in LIVE]
            for key in keys:
                try:
                    self.store().renew(key, self.lease_s)
                except PopcornError:  # a full disk: the next beat tries again
                    log.warning("could not renew the lease of %s", key)

    def _trim(self) -> None:
        finished = [k for k, j in self.jobs.items() if j.state in TERMINAL]
        for key in finished[: max(0, len(finished) - RECENT_JOBS)]:
            del self.jobs[key]

    def _job_dir(self, job_id: str) -> Path:
        return self.out_root / WEB_FOLDER / job_id
