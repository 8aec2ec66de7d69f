"""The driver: runs the stages of run-store items on an executor and alone writes the store.

Batches (:mod:`llmpopcorn.runs.batch`) and the study (:mod:`llmpopcorn.study.bench`) both hand it a
queue of :class:`Unit` s (one store item each) and a :class:`Work` that says what is theirs:
the item's kind and group, how its first payload is completed when it starts (a batch
variant learns its earlier variants' titles), what its stored result is, and what to do
when it ends. The driver claims a unit (a lease) when it submits it, moves its state from
stage to stage (``ideate`` -> ``render`` -> ``score``, or ``ideate_score`` without
rendering) on the executor (:mod:`llmpopcorn.runs.executors`), renews the leases of what is in
flight, and finishes the unit when its last stage returns, in short transactions.

What happens to an error is decided once, by :func:`classify`: a quota or cap **pauses**
(the unit goes back to ``pending`` and nothing new is submitted), a setup problem stops
submitting (it would fail every unit alike), a lost worker and an item's own error are
recorded and the rest goes on. On Ctrl-C, SIGTERM or a store error every unit this driver
holds goes back to ``pending`` (``interrupted``), so the next run takes it at once.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import ConfigError, DataError, MissingExtraError, PopcornError
from llmpopcorn.core.settings import Settings
from llmpopcorn.runs.executors import Executor, Slots, WorkerLost, make_executor
from llmpopcorn.runs.inputs import check_limits
from llmpopcorn.runs.store import Store, StoreError

log = logging.getLogger(__name__)

#: errors that would fail every unit alike: stop submitting new ones
SETUP_ERRORS = (ConfigError, DataError, MissingExtraError, StoreError)
#: errno values of a disk that is full (every later unit would fail to save too)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class QuotaError(PopcornError):
    """The LLM provider says the API key's quota or balance is used up."""


class BudgetError(PopcornError):
    """This run reached a cap it was given (LLM calls, hosted spending)."""


def is_quota_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what it was raised from) says the key's quota is used up:
    HTTP 402, or an error whose code or text says ``insufficient_quota`` / quota."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, QuotaError):
            return True
        if getattr(current, "code", None) == "insufficient_quota":
            return True
        status = getattr(current, "status_code", None)
        text = f"{current} {getattr(current, 'body', '') or ''}".lower()
        if status == 402 or "http 402" in text:
            return True
        if "insufficient_quota" in text or "exceeded your current quota" in text:
            return True
        if status == 429 and "quota" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def classify(exc: BaseException) -> str:
    """What the driver does with a unit's error: ``pause`` (quota, a cap), ``setup``
    (stop submitting: a bad setting, missing data, a full disk), ``lost`` (a worker died)
    or ``item`` (record it, go on)."""
    from llmpopcorn.backends.hosted.errors import CostLimitError

    if isinstance(exc, BudgetError | CostLimitError) or is_quota_error(exc):
        return "pause"
    if isinstance(exc, SETUP_ERRORS) or is_disk_full(exc):
        return "setup"
    if isinstance(exc, WorkerLost):
        return "lost"
    return "item"


def on_gpu(settings: Settings) -> bool:
    """Whether rendering runs on CUDA (asks torch only when a diffusers backend is set)."""
    if settings.device.startswith("cuda"):
        return True
    if settings.device != "auto" or (settings.image == "draft" and settings.video == "draft"):
        return False
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def make_runner(
    executor: str | Executor, settings: Settings, address: str | None = None
) -> Executor:
    """The executor named ``executor`` (or the one given), its render workers on GPUs
    when rendering runs on CUDA."""
    if isinstance(executor, Executor):
        return executor
    return make_executor(executor, address=address, gpu_render=settings.render and on_gpu(settings))


def slots_for(settings: Settings, concurrency: int, render_slots: int | None = None) -> Slots:
    """K ideation calls at once; renders at once: ``render_slots``, else one per GPU on
    CUDA, else one (the CPU is shared with ideation)."""
    check_limits(concurrency=concurrency, render_slots=render_slots)
    if render_slots is None:
        render_slots = 1
        if on_gpu(settings):
            try:
                import torch

                render_slots = max(1, torch.cuda.device_count())
            except Exception:  # noqa: BLE001
                render_slots = 1
    return Slots(ideate=concurrency, render=render_slots)


def cleanup_staging(staging: Path) -> None:
    """Remove a run's staging folder and its parent when empty (a finished run leaves
    none; an interrupted one leaves its units' folders for the next run to wipe)."""
    for path in (staging, staging.parent):
        try:
            path.rmdir()
        except OSError:
            pass


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    paused: int = 0
    running: int = 0
    computed: int = 0  # finished by this process
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.computed / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        left = self.total - self.done - self.failed
        return left / self.rate if self.rate > 0 else None


@dataclass
class Unit:
    """One store item to run. ``task``: the first stage's payload (the worker's input);
    ``node``: this unit's id for ordering (default: its key); ``after``: the node of a
    unit that must have ended before this one starts; ``data``: the caller's own."""

    key: str
    settings_hash: str
    labels: dict[str, Any]
    task: dict[str, Any]
    node: Hashable = None
    after: Hashable = None
    data: Any = None

    def __post_init__(self) -> None:
        if self.node is None:
            self.node = self.key


class Work:
    """What a caller of :func:`drive` decides; override the hooks it needs."""

    kind = "item"
    retry_failed = True

    def __init__(self, group: str):
        self.group = group

    def start(self, unit: Unit) -> dict[str, Any]:
        """The first stage's payload, completed when the unit is submitted."""
        return dict(unit.task)

    def result(self, unit: Unit, state: dict[str, Any]) -> dict[str, Any]:
        """What the store keeps of a finished unit."""
        return {}

    def ended(self, unit: Unit, state: dict[str, Any], ok: bool) -> None:
        """A unit finished (``ok``) or failed in this process."""

    def not_claimed(self, unit: Unit, outcome: str) -> None:
        """A unit was not run: ``done``, ``failed`` (not retried) or ``busy`` elsewhere."""


@dataclass
class Outcome:
    pause_reason: str | None = None
    setup_error: str | None = None
    busy: int = 0


def seconds_of(state: dict[str, Any]) -> float | None:
    record = state.get("record")
    return round(sum(record.timings.values()), 4) if record is not None else None


def drive(
    store: Store,
    runner: Executor,
    todo: deque[Unit],
    work: Work,
    *,
    progress: Progress,
    slots: Slots,
    render: bool,
    lease_s: float,
    poll_s: float = 0.5,
    on_progress: Callable[[Progress], None] | None = None,
) -> Outcome:
    """Run ``todo`` on ``runner`` (already started); see the module docstring."""
    out = Outcome()
    inflight: dict[Any, tuple[Unit, str]] = {}
    held: set[str] = set()  # keys claimed by this driver and not yet finished or released
    # with K >= 4, a few claimed units wait in the ideation queue, so a thread that
    # finishes one starts the next at once instead of waiting for the driver to wake
    # up; with fewer, nothing waits (a setup error then stops before another starts)
    ahead = slots.ideate // 4
    limit = slots.ideate + ahead + 2 * slots.render + 2  # claims held at once
    last_renew = time.monotonic()
    stop = False
    unfinished = {unit.node for unit in todo}
    first = "ideate" if render else "ideate_score"

    def ideating() -> int:
        return sum(1 for _, stage in inflight.values() if stage == first)

    def next_ready() -> Unit | None:
        for position, candidate in enumerate(todo):
            if candidate.after is None or candidate.after not in unfinished:
                del todo[position]
                return candidate
        return None

    def finish(unit: Unit, state: dict[str, Any]) -> None:
        ok = state.get("error") is None
        unfinished.discard(unit.node)
        result = work.result(unit, state) if state.get("record") is not None else None
        store.finish(
            unit.key,
            status="ok" if ok else "failed",
            result=result,
            error=state.get("error"),
            run_dir=state.get("run_dir"),
            seconds=seconds_of(state),
        )
        held.discard(unit.key)
        progress.computed += 1
        if ok:
            progress.done += 1
        else:
            progress.failed += 1
        work.ended(unit, state, ok)

    try:
        while todo or inflight:
            while todo and not stop and ideating() < slots.ideate + ahead and len(inflight) < limit:
                unit = next_ready()
                if unit is None:
                    break
                held.add(unit.key)  # before the claim: an interrupt inside it is covered
                claim = store.claim(
                    unit.key,
                    kind=work.kind,
                    group=work.group,
                    settings_hash=unit.settings_hash,
                    labels=unit.labels,
                    lease_s=lease_s,
                    retry_failed=work.retry_failed,
                )
                if not claim.claimed:
                    held.discard(unit.key)
                    unfinished.discard(unit.node)
                    if claim.outcome == "done":
                        progress.done += 1
                    elif claim.outcome == "failed":
                        progress.failed += 1
                    else:
                        out.busy += 1
                    work.not_claimed(unit, claim.outcome)
                    continue
                inflight[runner.submit(first, work.start(unit))] = (unit, first)
            progress.running = len(inflight)
            if on_progress:
                on_progress(progress)
            if not inflight:
                break
            for handle in runner.wait(list(inflight), timeout=poll_s):
                unit, stage = inflight.pop(handle)
                try:
                    state = runner.result(handle)
                except BaseException as exc:  # noqa: BLE001 - a lost worker, a bug
                    if not isinstance(exc, Exception):
                        raise
                    state = {"record": None, "error": str(exc), "error_kind": classify(exc)}
                kind = state.get("error_kind")
                if kind == "pause":
                    store.release(unit.key, f"paused: {state['error']}")
                    held.discard(unit.key)
                    progress.paused += 1
                    out.pause_reason = out.pause_reason or state["error"]
                    stop = True
                elif state.get("error") is not None:
                    finish(unit, state)
                    if kind == "setup":
                        out.setup_error = out.setup_error or state["error"]
                        stop = True
                elif stage == "ideate":
                    inflight[runner.submit("render", state)] = (unit, "render")
                elif stage == "render":
                    inflight[runner.submit("score", state)] = (unit, "score")
                else:
                    finish(unit, state)
            if stop:  # paused or stopped: calls not started yet never start
                for handle, (unit, stage) in list(inflight.items()):
                    if stage == first and runner.cancel(handle):
                        del inflight[handle]
                        store.release(unit.key, "paused before it started")
                        held.discard(unit.key)
                        progress.paused += 1
            now = time.monotonic()
            if now - last_renew > lease_s / 3:
                for unit, _ in inflight.values():
                    store.renew(unit.key, lease_s)
                last_renew = now
        progress.paused += len(todo) if stop else 0
        progress.running = 0
        if on_progress:
            on_progress(progress)
    except BaseException:
        # Ctrl-C, SIGTERM, a store error: every claim this driver holds goes back to
        # pending (in flight, just claimed, or between a result and its finish)
        for key in held:
            try:
                store.release(key, "interrupted")
            except PopcornError:
                pass
        raise
    return out
