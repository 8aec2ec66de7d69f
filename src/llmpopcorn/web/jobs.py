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
import os
import queue
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import ConfigError, PopcornError
from llmpopcorn.core.redact import scrub
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import utcnow
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.runs.store import Store, new_owner
from llmpopcorn.web.requests import RunRequest, settings_for, settings_key
from llmpopcorn.web.runfiles import mark_record, only_run_dir, package_bytes, summary

log = logging.getLogger(__name__)

KIND = "web"
GROUP = "studio"
STORE_NAME = "store.sqlite"
WEB_FOLDER = "web"
TERMINAL = frozenset({"done", "failed", "cancelled", "interrupted"})
LIVE = frozenset({"queued", "running"})
DEFAULT_LEASE_S = 600.0
MAX_ERROR_CHARS = 1_000
#: finished jobs kept in memory for late event-stream readers (the store keeps them all)
RECENT_JOBS = 256
INTERRUPTED = "interrupted: the server stopped before this run finished"
KEY_LOST = (
    "interrupted: this queued run needed the API key typed into the page, which is not "
    "kept across a server restart"
)
KEY_LOST_HINT = "run it again (retry) and type the key again"


class JobBusy(PopcornError):
    """The job is still queued or running (it cannot be run again yet)."""


class JobStopped(Exception):
    """Raised inside a running job at a stage boundary (cancel, or server shutdown)."""

    def __init__(self, state: str, message: str):
        super().__init__(message)
        self.state = state


@dataclass
class Job:
    id: str
    request: RunRequest  # may hold a typed key: memory of this process only
    settings: Settings
    lane: str
    state: str = "queued"
    submitted: float = field(default_factory=time.time)
    events: list[dict[str, Any]] = field(default_factory=list)
    stop: tuple[str, str] | None = None  # (state, message) once asked to stop
    seq: int = 0  # queue order (submission, or the store's order for re-queued jobs)
    finishing: bool = False  # its end is being written (the state changes after the store)
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def key(self) -> str:
        return f"{KIND}:{self.id}"

    def emit(self, kind: str, **data: Any) -> None:
        with self.cond:
            self.events.append({"seq": len(self.events), "type": kind, "t": time.time(), **data})
            self.cond.notify_all()


class ProgressLLM:
    """A pipeline's LLM, wrapped so the job running reports each call: which variant
    (by its seed) and which attempt. Everything else is the wrapped backend's own."""

    def __init__(self, inner: Any):
        self._inner = inner
        self.listener: Callable[[Any], None] | None = None

    def complete(self, request: Any) -> str:
        if self.listener is not None:
            self.listener(request)
        return self._inner.complete(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def progress_pipeline(settings: Settings, **given: Any) -> Pipeline:
    """The default pipeline factory: a Pipeline whose LLM reports each call (variants)."""
    from llmpopcorn.core.registry import registry

    llm = given.pop("llm", None) or registry.create("llm", settings.llm, settings)
    proxy = ProgressLLM(llm)
    pipeline = Pipeline(settings, llm=proxy, **given)
    pipeline.progress = proxy
    return pipeline


def lane_for(settings: Settings) -> str:
    """``draft`` for CPU draft work, ``device`` for anything that holds a model device."""
    draft_render = not settings.render or (settings.image == "draft" and settings.video == "draft")
    local_llm = settings.llm == "transformers"
    return "draft" if draft_render and not local_llm else "device"


class JobManager:
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
        _lower_priority()  # the event loop (page, API, history) stays responsive under jobs
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
                progress.listener = _variant_listener(job, pipeline.settings)
            from llmpopcorn.backends.diffusion.cancel import stop_check
            from llmpopcorn.core.progress import progress_listener  # numpy: only once a job runs

            # a diffusers render checks the stop after each denoising step, not only
            # between stages
            with progress_listener(_index_listener(job)), stop_check(check_stop):
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

    # -- reading -------------------------------------------------------------------------

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


def _variant_listener(job: Job, settings: Settings) -> Callable[[Any], None]:
    """Emit ``progress`` events for LLM calls: variant k of n (by seed) and the attempt."""
    first = settings.seed if job.request.seed is None else job.request.seed
    attempts: dict[int, int] = {}

    def listen(request: Any) -> None:
        if job.stop is not None:
            raise JobStopped(*job.stop)  # cancelling between variants, not only stages
        seed = getattr(request, "seed", None)
        seed = first if seed is None else seed
        attempts[seed] = attempts.get(seed, 0) + 1
        job.emit(
            "progress",
            stage="ideate",
            variant=seed - first + 1,
            of=settings.variants,
            attempt=attempts[seed],
        )

    return listen


#: niceness added to worker threads (Linux schedules threads separately)
WORKER_NICENESS = 10


def _lower_priority() -> None:
    """Run this worker thread at a lower CPU priority than the server's event loop."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: keep the default
        pass


def _index_listener(job: Job) -> Callable[[str, int, int], None]:
    """Index-build progress of a first PE run as ``index`` events (at most one per
    whole percent), stopping the build when the job is cancelled."""
    last = [-1]

    def listen(what: str, done: int, total: int) -> None:
        if job.stop is not None:
            raise JobStopped(*job.stop)
        percent = int(100 * done / total) if total else 100
        if percent != last[0]:
            last[0] = percent
            job.emit("index", what=what, done=done, total=total, percent=percent)

    return listen
