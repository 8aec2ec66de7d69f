"""The worker that runs a batch item's or a study cell's stages on an executor.

An :class:`ItemWorker` holds one :class:`~llmpopcorn.pipeline.core.Pipeline` (so models
load once per worker) and runs its public stages: ``ideate`` (the prompt, then the LLM),
``render`` and ``score`` (which also saves the record and moves the finished folder from
its staging place into its final one). It never writes the run store: the driver does.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmpopcorn.core.settings import Settings
from llmpopcorn.runs.driver import QuotaError, classify, is_disk_full, is_quota_error
from llmpopcorn.runs.limits import LimitedLLM, RateLimiter

log = logging.getLogger(__name__)


class ItemWorker:
    """Runs the stages of items; holds one pipeline, so models load once per worker.

    ``settings``: :meth:`Settings.public` data (no secrets); ``api_key`` travels apart
    and is never written. ``share``: this worker's part of the batch's LLM limits
    (several Ray workers split them). ``pipeline``: an already-built pipeline (local
    executor; tests inject fakes). ``scorer``: a predictor already loaded by another
    worker of this process, with ``locks`` (prompt lock, predictor lock) shared with it.
    ``summarize(record, pipeline)``: what a finished item adds to its state
    (``state["summary"]``), computed where the pipeline is (the study's cell result)."""

    def __init__(
        self,
        settings: dict[str, Any],
        api_key: str | None = None,
        share: float = 1.0,
        pipeline=None,
        *,
        scorer=None,
        locks: tuple[threading.Lock, threading.Lock] | None = None,
        summarize: Callable[[Any, Any], dict[str, Any]] | None = None,
    ):
        self.settings = Settings(**settings, llm_api_key=api_key)
        self.share = share
        self._pipeline = pipeline
        self._scorer = scorer
        self._lock, self._score_lock = locks or (threading.Lock(), threading.Lock())
        self.summarize = summarize
        self._prompts: dict[str, Any] = {}
        self._notes: list[str] = []
        self._warm = False

    @property
    def pipeline(self):
        if self._pipeline is None:
            from llmpopcorn.core.registry import registry
            from llmpopcorn.pipeline.core import Pipeline

            s = self.settings
            llm = registry.create("llm", s.llm, s)
            if s.llm_rpm or s.max_batch_llm_calls:
                limiter = RateLimiter(s.llm_rpm * self.share) if s.llm_rpm else None
                cap = s.max_batch_llm_calls
                cap = None if cap is None else max(1, int(cap * self.share))
                llm = LimitedLLM(llm, limiter, cap)
            self._pipeline = Pipeline(s, llm=llm, scorer=self._scorer)
        return self._pipeline

    def warm(self) -> None:
        """Create every component now (a missing key or a broken model fails here)."""
        with self._lock:
            if self._warm:
                return
            p = self.pipeline
            llm = p.llm
            inner = getattr(llm, "_llm", llm)
            if isinstance(getattr(type(inner), "client", None), property):
                client = inner.client  # one HTTP client, before K threads race for it
                # the openai client's one-time platform probe (~0.3 s) would hold the
                # first requests and release them in a burst, past the rate limit
                headers = getattr(client, "platform_headers", None)
                if callable(headers):
                    headers()
                getattr(getattr(client, "chat", None), "completions", None)  # lazy import
            p.prompt_builder  # noqa: B018
            probe = p.new_record("warm", seed=0)
            p.prepare(probe)  # renderers, and the predictor once; notes if it cannot load
            self._notes = list(probe.notes)
            self._warm = True

    def _prompt(self, query: str):
        """The query's prompt and category (as in `popcorn make`: the judge's category
        resolver, then PE), built once per query, one at a time."""
        with self._lock:
            planned = self._prompts.get(query)
            if planned is None:
                planned = self.pipeline.plan(query, judge_lock=self._score_lock)
                self._prompts[query] = planned
                if len(self._prompts) > 256:
                    self._prompts.pop(next(iter(self._prompts)))
            return planned

    def _fail(self, state: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        from llmpopcorn.pipeline.core import mark_failed

        kind = classify(exc)
        record = state["record"]
        mark_failed(record, exc)
        record.status = "failed"  # the driver gives an interrupted item back (pending)
        if is_disk_full(exc):
            record.error = f"disk full: {exc}"
        if kind == "pause" and is_quota_error(exc) and not isinstance(exc, QuotaError):
            detail = getattr(exc, "message", None) or record.error
            record.error = f"the LLM provider says the API key's quota is used up ({detail})"
        state.update(error=record.error, error_kind=kind)
        staging = Path(state["staging"])
        if kind == "pause":  # redone later: leave nothing behind
            shutil.rmtree(staging, ignore_errors=True)
            return state
        if not isinstance(exc, Exception):  # a KeyboardInterrupt in a worker: re-raise
            raise exc
        try:
            record.run_dir = state["final"]
            self.pipeline.finish(record, staging)
            _move(staging, Path(state["final"]))
            state["run_dir"] = state["final"]
        except OSError as err:
            log.warning("could not keep the folder of failed item %s: %s", state["key"], err)
        return state

    def ideate(self, task: dict[str, Any]) -> dict[str, Any]:
        from llmpopcorn.pipeline.core import timed_stage

        self.warm()
        p = self.pipeline
        staging = Path(task["staging"])
        shutil.rmtree(staging, ignore_errors=True)  # a killed attempt's leftovers
        staging.mkdir(parents=True)
        record = p.new_record(task["query"], seed=task["seed"], run_dir=staging)
        record.notes += self._notes
        state = {**task, "record": record, "error": None, "error_kind": None}
        stage = timed_stage(record)
        try:
            with stage("prompt"):
                prompt, category = self._prompt(record.query)
                p.apply_prompt(record, prompt)
            record.category = category
            with stage("ideate"):
                asked = p.ideate(
                    record,
                    prompt,
                    variant=task["variant"],
                    variants=task["variants"],
                    avoid=list(task.get("avoid") or []),
                )
            state["twin"] = asked.twin
            if p.settings.refine:
                with stage("refine"):
                    p.refine(record, prompt)
        except BaseException as exc:  # noqa: BLE001 - recorded, classified, handed back
            return self._fail(state, exc)
        return state

    def ideate_score(self, task: dict[str, Any]) -> dict[str, Any]:
        """Both stages in one call (no rendering): saves two thread hand-offs an item;
        scoring still runs one at a time under the predictor's lock."""
        state = self.ideate(task)
        return state if state["error"] is not None else self.score(state)

    def render(self, state: dict[str, Any]) -> dict[str, Any]:
        self.warm()
        try:
            self.pipeline.render(state["record"], Path(state["staging"]))
        except BaseException as exc:  # noqa: BLE001
            return self._fail(state, exc)
        return state

    def score(self, state: dict[str, Any]) -> dict[str, Any]:
        from llmpopcorn.pipeline.core import timed_stage

        self.warm()
        record = state["record"]
        staging = Path(state["staging"])
        try:
            with self._score_lock, timed_stage(record)("score"):
                self.pipeline.score(record, staging)
            record.status = "ok"
            record.run_dir = state["final"]
            self.pipeline.finish(record, staging)
            _move(staging, Path(state["final"]))
        except BaseException as exc:  # noqa: BLE001
            return self._fail(state, exc)
        state["run_dir"] = state["final"]
        if self.summarize is not None:
            state["summary"] = self.summarize(record, self.pipeline)
        return state


def _move(staging: Path, final: Path) -> None:
    """Put a complete folder in place; a leftover of an unfinished claim is replaced."""
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(final)
