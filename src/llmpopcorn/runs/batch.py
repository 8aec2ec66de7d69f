"""Batches: a creator's own queries x N variants, run concurrently, resumable after a crash.

``popcorn batch QUERIES.txt --variants N --concurrency K`` turns every (query, variant)
into one **item** of the run store (:mod:`llmpopcorn.runs.store`, kind ``batch``, group =
the batch id). An item is one run folder, made in three stages by a worker
(:class:`ItemWorker`) on an executor (:mod:`llmpopcorn.runs.executors`): ``ideate`` (the
prompt, then the LLM; up to K at once, they wait on I/O), ``render`` (cover and clip,
on a separate bounded pool) and ``score`` (the predictor, loaded once, used from one
thread), which also moves the finished folder into place.

Crash safety. The driver (:func:`run_batch`) alone writes the store, in short
transactions: it claims an item (a lease) when it submits it and finishes it when its
last stage returns. A run folder is written under ``OUT/.staging/<batch>/<key>`` and
renamed to ``OUT/<batch>/<NNN>-v<variant>-<slug>`` only when complete, so a
``kill -9`` leaves no half folder where results are read, and loses at most the items
in flight: their claims belong to a dead process, so ``--resume ID`` (or the same
command again) takes them over, wipes their staging folders and redoes them; finished
items are never redone, and no item exists twice (its key is fixed, its folder name
too).

Identity. The batch id is a hash of the queries, the variant count and every setting
that changes a result (:func:`llmpopcorn.runs.identity.cell_identity`, shared with the
study: LLM, model, sampling, mode, PE parameters, renderers when rendering, the
predictor's files, the corpus), so the same command resumes the same batch and other
settings make a new one.

Variants differ: variant v uses seed ``seed + v`` and, when N > 1, an instruction to
take a different angle (:data:`ANGLES`); a title nearly equal to another variant's of
the same query (the copy check's similarity, :data:`llmpopcorn.core.copycheck.COPY_THRESHOLD`)
is re-asked with feedback. Exported rows rank the variants of each query by the
judge's score.

Back-pressure. ``llm_rpm`` spaces LLM requests; ``max_batch_llm_calls`` caps the LLM
requests of a batch and ``max_batch_cost`` the hosted generators' spending (refused up
front by :func:`llmpopcorn.backends.hosted.costs.check_batch_cost`, then checked before
each hosted call). When an API key's quota runs out (HTTP 402, or 429 with
``insufficient_quota``), or a cap is reached, the batch **pauses**: items in flight
and the rest go back to ``pending`` (not ``failed``) and ``--resume`` continues later.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import ConfigError, InputError
from llmpopcorn.core.paths import clean_query, slugify
from llmpopcorn.core.settings import Settings
from llmpopcorn.runs.driver import (
    Progress,
    Unit,
    Work,
    cleanup_staging,
    drive,
    make_runner,
    slots_for,
)
from llmpopcorn.runs.executors import Executor, LocalExecutor, WorkerSpec
from llmpopcorn.runs.identity import NOT_RESULT, identity_of, item_settings, result_settings
from llmpopcorn.runs.inputs import MAX_QUERIES, check_limits, read_queries  # noqa: F401
from llmpopcorn.runs.store import DEFAULT_LEASE_S, Store, digest
from llmpopcorn.runs.worker import ItemWorker

log = logging.getLogger(__name__)

KIND = "batch"
PREFIX = "batch-"


# -- identity ------------------------------------------------------------------------


def item_key(batch_id: str, index: int, query: str, variant: int, seed: int) -> str:
    return "item-" + digest([batch_id, index, query, variant, seed], 32)


@dataclass
class Item:
    key: str
    index: int
    query: str
    variant: int
    seed: int

    def labels(self, batch_id: str, mode: str) -> dict[str, Any]:
        return {
            "batch": batch_id,
            "index": self.index,
            "query": self.query,
            "variant": self.variant,
            "seed": self.seed,
            "mode": mode,
        }


# -- the driver ----------------------------------------------------------------------


@dataclass
class BatchRun:
    batch_id: str
    store_path: Path
    runs_dir: Path
    queries: list[str]
    variants: int
    progress: Progress
    skipped: int = 0  # finished before this process started
    busy: int = 0  # held by another live process
    pause_reason: str | None = None
    setup_error: str | None = None
    seconds: float = 0.0
    executor: dict[str, Any] = field(default_factory=dict)

    @property
    def paused(self) -> bool:
        return self.pause_reason is not None


def open_batch(store: Store, batch_id: str) -> dict[str, Any]:
    doc = store.get_settings(batch_id.removeprefix(PREFIX))
    if doc is None or doc.get("kind") != KIND:
        known = sorted(store.groups(KIND))
        raise ConfigError(
            f"no batch {batch_id} in {store.path}",
            ("batches here: " + ", ".join(known[:10]))
            if known
            else "check the id and --out (the folder holding store.sqlite)",
        )
    return doc


def run_batch(
    queries: Sequence[str] | None,
    settings: Settings,
    *,
    out_dir: str | Path | None = None,
    variants: int | None = None,
    concurrency: int = 4,
    render_slots: int | None = None,
    executor: str | Executor = "local",
    address: str | None = None,
    resume: str | None = None,
    retry_failed: bool = True,
    pipeline=None,
    on_start: Callable[[BatchRun], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    poll_s: float = 0.5,
) -> BatchRun:
    """Run (or resume) a batch; see the module docstring. ``pipeline``: a prebuilt
    pipeline for the local executor (tests); its settings must be ``settings``."""
    from llmpopcorn.backends.hosted.costs import batch_budget, check_batch_cost

    check_limits(concurrency=concurrency, variants=variants, render_slots=render_slots)
    out = Path(out_dir or settings.out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with Store(out / "store.sqlite", sync_every_commit=False) as store:
        if resume:
            if queries:
                raise ConfigError(
                    "pass either a query file or --resume ID, not both",
                    f"to resume: popcorn batch --resume {resume} --out {out}",
                )
            doc = open_batch(store, resume)
            current = settings.public()
            merged = {k: current[k] for k in NOT_RESULT if k in current}
            merged.update(doc["settings"])
            settings = Settings(**merged, llm_api_key=settings.llm_api_key)
            queries, variants = doc["queries"], doc["variants"]
        else:
            if not queries:
                raise InputError("no queries given", "pass a file with one query a line")
            queries = [clean_query(q) for q in queries]
            variants = settings.variants if variants is None else variants
        settings = item_settings(settings).model_copy(update={"out_dir": out})
        # from the batch's own settings (a resumed batch's stored ones, not the command's)
        slots = slots_for(settings, concurrency, render_slots)
        if pipeline is not None:
            pipeline.settings = settings
            llm_model = pipeline.llm.model_id()
        else:
            from llmpopcorn.core.registry import registry

            llm_model = registry.create("llm", settings.llm, settings).model_id()
        identity = identity_of(settings, llm_model)
        settings_hash = store.put_settings(identity)
        doc = {
            "kind": KIND,
            "queries": list(queries),
            "variants": variants,
            "settings": result_settings(settings),
            "identity": settings_hash,
        }
        batch_id = PREFIX + store.put_settings(doc)
        if resume and batch_id != resume:
            raise ConfigError(
                f"batch {resume} was made with other settings or model files than are "
                "here now (the predictor's files, the corpus or the LLM's model changed)",
                "restore them, or start a new batch with the query file",
            )
        items = [
            Item(item_key(batch_id, i, q, v, settings.seed + v), i, q, v, settings.seed + v)
            for v in range(variants)
            for i, q in enumerate(queries)
        ]
        existing = {it["key"]: it for it in store.items(kind=KIND, group=batch_id)}
        progress = Progress(total=len(items))
        run = BatchRun(batch_id, store.path, out, list(queries), variants, progress)
        titles: dict[int, list[str]] = {}
        todo: deque[Item] = deque()
        for item in items:
            old = existing.get(item.key)
            status = old["status"] if old else None
            if status == "ok":
                progress.done += 1
                run.skipped += 1
                if old["result"].get("title"):
                    titles.setdefault(item.index, []).append(old["result"]["title"])
            elif status == "failed" and not retry_failed:
                progress.failed += 1
                run.skipped += 1
            else:
                todo.append(item)
        if todo:
            check_batch_cost(settings, len(todo))  # refuse a batch over its cap up front
        if on_start:
            on_start(run)
        if not todo:
            run.seconds = time.monotonic() - started
            return run
        runner = make_runner(executor, settings, address)
        run.executor = runner.describe()
        render = settings.render
        if pipeline is not None:
            if not isinstance(runner, LocalExecutor):
                raise ConfigError("a prebuilt pipeline needs the local executor", "")
            spec = WorkerSpec(ItemWorker, local=ItemWorker(settings.public(), pipeline=pipeline))
        else:
            spec = WorkerSpec(
                ItemWorker, {"settings": settings.public(), "api_key": settings.api_key()}
            )
        staging_root = run.runs_dir / ".staging" / batch_id
        units = deque(
            Unit(
                item.key,
                settings_hash,
                item.labels(batch_id, settings.mode),
                {
                    "key": item.key,
                    "query": item.query,
                    "variant": item.variant,
                    "variants": variants,
                    "seed": item.seed,
                    "staging": str(staging_root / item.key),
                    "final": str(
                        out / batch_id / f"{item.index + 1:03d}-v{item.variant}-"
                        f"{slugify(item.query)}"
                    ),
                },
                # variant v of a query starts when variant v-1 has ended, so it sees every
                # earlier variant's title (the near-duplicate check is then complete)
                node=(item.index, item.variant),
                after=(item.index, item.variant - 1) if item.variant else None,
                data=item,
            )
            for item in todo
        )
        with batch_budget():
            runner.start(spec, slots, render=render)
            try:
                outcome = drive(
                    store, runner, units, BatchWork(batch_id, titles),
                    progress=progress, slots=slots, render=render,
                    lease_s=lease_s, poll_s=poll_s, on_progress=on_progress,
                )  # fmt: skip
            finally:
                runner.shutdown(cancel=True)
        run.pause_reason, run.setup_error = outcome.pause_reason, outcome.setup_error
        run.busy += outcome.busy
        cleanup_staging(staging_root)
        run.seconds = time.monotonic() - started
        return run


class BatchWork(Work):
    """A batch's part of the driver: each variant sees its query's earlier titles."""

    kind = KIND

    def __init__(self, batch_id: str, titles: dict[int, list[str]]):
        super().__init__(batch_id)
        self.titles = titles

    def start(self, unit: Unit) -> dict[str, Any]:
        return {**unit.task, "avoid": list(self.titles.get(unit.data.index, []))}

    def result(self, unit: Unit, state: dict[str, Any]) -> dict[str, Any]:
        record = state["record"]
        score = record.score
        llm = record.backends.get("llm")
        return {
            "title": record.idea.title if record.idea else None,
            "log2_comments": score.log2_comments if score else None,
            "expected_comments": score.expected_comments if score else None,
            "interval": list(score.interval) if score and score.interval else None,
            "category": (record.category or {}).get("name"),
            "predictor": score.predictor if score else None,
            "is_llm": llm.is_llm if llm else None,
            "ideator": llm.name if llm else None,
            "ideator_model": llm.model if llm else None,
            "attempts": len(record.attempts),
            "near_duplicate_of": state.get("twin"),
            "timings": record.timings,
        }

    def ended(self, unit: Unit, state: dict[str, Any], ok: bool) -> None:
        record = state.get("record")
        if ok and record is not None and record.idea is not None:
            self.titles.setdefault(unit.data.index, []).append(record.idea.title)


# -- reading -------------------------------------------------------------------------

COLUMNS = (
    "batch",
    "query",
    "mode",
    "variant",
    "seed",
    "status",
    "rank",
    "title",
    "score",
    "expected_comments",
    "category",
    "ideator",
    "ideator_model",
    "is_llm",
    "attempts",
    "near_duplicate_of",
    "error",
    "seconds",
    "run_dir",
    "key",
)


def batch_rows(store: Store, batch_id: str) -> list[dict[str, Any]]:
    """One row per item of ``batch_id`` in query then variant order, with each variant's
    rank among its query's variants by predicted popularity (1 = best)."""
    items = store.items(kind=KIND, group=batch_id)
    rows = []
    for it in items:
        labels, result = it["labels"], it["result"]
        row = {c: None for c in COLUMNS}
        row.update(
            batch=batch_id,
            query=labels.get("query"),
            mode=labels.get("mode"),
            variant=labels.get("variant"),
            seed=labels.get("seed"),
            status=it["status"],
            title=result.get("title"),
            score=result.get("log2_comments"),
            expected_comments=result.get("expected_comments"),
            category=result.get("category"),
            ideator=result.get("ideator"),
            ideator_model=result.get("ideator_model"),
            is_llm=result.get("is_llm"),
            attempts=result.get("attempts"),
            near_duplicate_of=result.get("near_duplicate_of"),
            error=it["error"],
            seconds=it["seconds"],
            run_dir=it["run_dir"],
            key=it["key"],
        )
        row["_index"] = labels.get("index", 0)
        rows.append(row)
    by_query: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        by_query.setdefault(row["_index"], []).append(row)
    for group in by_query.values():
        scored = sorted(
            (r for r in group if r["status"] == "ok" and r["score"] is not None),
            key=lambda r: (-r["score"], r["variant"]),
        )
        for rank, row in enumerate(scored, start=1):
            row["rank"] = rank
    rows.sort(key=lambda r: (r["_index"], r["variant"] or 0))
    for row in rows:
        del row["_index"]
    return rows


def batch_summaries(store: Store) -> list[dict[str, Any]]:
    """One line per batch in the store: id, queries, variants, items by status."""
    out = []
    for batch_id in store.groups(KIND):
        doc = store.get_settings(batch_id.removeprefix(PREFIX)) or {}
        items = store.items(kind=KIND, group=batch_id)
        counts = {s: 0 for s in ("ok", "failed", "running", "pending")}
        for it in items:
            counts[it["status"]] = counts.get(it["status"], 0) + 1
        total = len(doc.get("queries", [])) * int(doc.get("variants") or 1)
        settings = doc.get("settings", {})
        out.append(
            {
                "batch": batch_id,
                "queries": len(doc.get("queries", [])),
                "variants": doc.get("variants"),
                "items": total,
                "mode": settings.get("mode"),
                "llm": settings.get("llm"),
                "render": settings.get("render"),
                **counts,
                "not_started": max(0, total - len(items)),
                "updated": max((it["updated"] for it in items), default=None),
            }
        )
    return out


_SAFE = re.compile(r"^batch-[0-9a-f]{16}$")


def check_batch_id(text: str) -> str:
    if not _SAFE.match(text):
        raise InputError(
            f"not a batch id: {text!r}",
            "batch ids look like batch-0123456789abcdef (see `popcorn runs list`)",
        )
    return text
