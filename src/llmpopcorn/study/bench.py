"""The paper's study as one command: queries x LLMs x basic/PE (x refs) x video x seeds.

Every cell is one :meth:`Pipeline.make` run whose predicted popularity (log2 of the
comment count) goes into the run store (:mod:`llmpopcorn.runs.store`). A cell's key is a hash
of its query, its seed and **every setting that changes its result** (:func:`cell_identity`:
LLM backend, model and sampling; mode and, in PE mode, every PE parameter; renderers and
their options when rendering; the predictor's files; the corpus file), so a rerun with
other settings computes new cells, and a rerun with the same settings skips finished
ones. Cells are claimed with a lease, so two processes on one folder never do the same
cell. The summary covers exactly the cells of the command that wrote it; statistics are
in :mod:`llmpopcorn.study.stats`, the files in :mod:`llmpopcorn.study.report`.

Cells run like batch items (:mod:`llmpopcorn.runs.driver`, :mod:`llmpopcorn.runs.executors`): on the
local executor (K ideation threads, a bounded render pool, one predictor) or on Ray, arm
after arm, each cell's folder built under ``OUT/.staging`` and renamed to
``OUT/runs/<query id>-<arm>-s<seed>-<key>`` when complete.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import ConfigError, DataError, PopcornError
from llmpopcorn.core.paths import slugify
from llmpopcorn.core.registry import registry
from llmpopcorn.core.settings import Settings
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.runs.driver import Unit, Work
from llmpopcorn.runs.executors import Executor
from llmpopcorn.runs.identity import (
    cell_identity,
    corpus_identity,
    predictor_identity,
)
from llmpopcorn.runs.store import DEFAULT_LEASE_S, Store, digest
from llmpopcorn.study.cells import cell_result, failed_result

log = logging.getLogger(__name__)

QUERY_KINDS = ("abstract", "concrete")
CELL = "study-cell"
#: what the study uses unless a flag, the environment or the config file says otherwise:
#: an independent judge (trained on the judge part only) and PE references from the
#: reference part, so no reference sits in the judge's memory
#: what the study changes unless a flag, variable or config file says otherwise: the
#: independent judge, PE's references from the reference pool, and the paper's prompt
#: (title, cover prompt, video prompt; not the post's caption, hashtags and keywords)
STUDY_DEFAULTS = {"predictor": "judge", "pe_pool": "reference", "post_text": False}
NOT_RENDERED = "none"
#: the loop arm: basic mode plus judge-guided refinement (:mod:`llmpopcorn.study.loop`)
REFINE_ARM = "refine"
#: its rounds when ``--refine`` is not given
DEFAULT_ROUNDS = 2


@dataclass(frozen=True)
class BenchQuery:
    query_id: str
    kind: str
    text: str


@dataclass(frozen=True)
class Arm:
    """One configuration of the grid: every cell of an arm shares a pipeline."""

    llm: str
    mode: str
    refs: int | None
    video: str
    #: the ``refine`` arm's rounds (basic mode + judge-guided refinement; 0 elsewhere)
    rounds: int = 0


@dataclass
class StudyPlan:
    queries: list[BenchQuery]
    llms: list[str]
    modes: list[str] = field(default_factory=lambda: ["basic", "pe"])
    videos: list[str] = field(default_factory=lambda: ["draft"])
    seeds: list[int] = field(default_factory=lambda: [42])
    #: PE's number of references: one arm per value (empty: the configured n_refs)
    refs: list[int] = field(default_factory=list)
    #: rounds of the ``refine`` mode's arm (:mod:`llmpopcorn.study.loop`)
    refine_rounds: int = DEFAULT_ROUNDS

    def arms(self, settings: Settings) -> list[Arm]:
        videos = self.videos if settings.render else [NOT_RENDERED]
        out = []
        for llm, mode, video in itertools.product(self.llms, self.modes, videos):
            if mode == REFINE_ARM:
                out.append(Arm(llm, mode, None, video, rounds=self.refine_rounds))
                continue
            for refs in (self.refs or [settings.n_refs]) if mode == "pe" else [None]:
                out.append(Arm(llm, mode, refs, video))
        return out

    def size(self, settings: Settings) -> int:
        return len(self.arms(settings)) * len(self.queries) * len(self.seeds)


def load_queries(
    data_dir: str | Path | None, kinds: Sequence[str] = QUERY_KINDS, limit: int | None = None
) -> list[BenchQuery]:
    """The benchmark queries from ``<data>/prompts/<kind>_prompts.txt`` (one a line)."""
    if data_dir is None:
        raise DataError(
            "no data directory is set",
            "pass --data DIR or set POPCORN_DATA to the folder holding prompts/*_prompts.txt",
        )
    queries: list[BenchQuery] = []
    for kind in kinds:
        if kind not in QUERY_KINDS:
            raise DataError(f"unknown query kind '{kind}'", f"use one of: {', '.join(QUERY_KINDS)}")
        path = Path(data_dir).expanduser() / "prompts" / f"{kind}_prompts.txt"
        if not path.exists():
            raise DataError(
                f"query file not found: {path}",
                "point --data / POPCORN_DATA at the folder holding prompts/abstract_prompts.txt "
                "and prompts/concrete_prompts.txt",
            )
        lines = [" ".join(x.split()) for x in path.read_text(encoding="utf-8").splitlines()]
        lines = [x for x in lines if x]
        for i, text in enumerate(lines[:limit] if limit else lines, start=1):
            queries.append(BenchQuery(f"{kind}-{i:03d}", kind, text))
    if not queries:
        raise DataError("no benchmark queries found", "check the prompts files")
    return queries


# -- identity (the settings part lives in llmpopcorn.runs.identity) -----------------


#: the grid's axes: cells that differ only in these belong to one study
AXES = ("llm", "llm_model", "llm_model_id", "mode", "n_refs", "video", "refine", "loop_judges")


def group_of(settings: Settings, predictor: dict | None, corpus_sha256: str | None) -> str:
    """The hash of a study's fixed settings (everything but its axes)."""
    pe = settings.model_copy(update={"mode": "pe"})
    data = cell_identity(pe, llm_model=None, predictor=predictor, corpus_sha256=corpus_sha256)
    return "study-" + digest({k: v for k, v in data.items() if k not in AXES})


def cell_key(query: BenchQuery, seed: int, settings_hash: str) -> str:
    return f"cell-{digest([query.query_id, query.text, seed, settings_hash], 32)}"


# -- running --------------------------------------------------------------------------


@dataclass
class StudyRun:
    """What :func:`run_study` did: the store, the keys of the plan's cells (the summary
    covers exactly these), and how many were computed, skipped or busy elsewhere."""

    store_path: Path
    keys: list[str] = field(default_factory=list)
    computed: int = 0
    skipped: int = 0
    busy: int = 0
    failed: int = 0
    executor: dict[str, Any] = field(default_factory=dict)


def arm_settings(settings: Settings, arm: Arm, out_dir: Path) -> Settings:
    # the refine arm is basic mode plus judge-guided rounds; every other arm refines nothing
    mode = "basic" if arm.mode == REFINE_ARM else arm.mode
    update: dict[str, Any] = {
        "llm": arm.llm,
        "mode": mode,
        "refine": arm.rounds,
        "out_dir": out_dir / "runs",
    }
    if arm.refs is not None:
        update["n_refs"] = arm.refs
    if arm.video != NOT_RENDERED:
        update["video"] = arm.video
    return settings.model_copy(update=update)


def arm_id(arm: Arm) -> str:
    refs = f"-r{arm.refs}" if arm.refs is not None else ""
    rounds = f"-k{arm.rounds}" if arm.rounds else ""
    return slugify(f"{arm.llm}-{arm.mode}{refs}{rounds}-{arm.video}", max_len=60, default="arm")


class StudyWorker:
    """The study's worker: one :class:`llmpopcorn.runs.worker.ItemWorker` per arm (its LLM,
    mode, refs and renderers), all sharing one predictor and its lock. The driver runs
    the arms one after another, so when an arm's first cell arrives the previous arm's
    models (a local LLM, the renderers) are released; the predictor is kept.

    ``arms``: arm id -> :meth:`Settings.public` data; ``pipelines``: prebuilt pipelines
    by arm id (local executor; tests inject fakes)."""

    def __init__(
        self,
        arms: dict[str, dict[str, Any]],
        api_key: str | None = None,
        share: float = 1.0,
        pipelines: dict[str, Pipeline] | None = None,
    ):
        self.arms = arms
        self.api_key = api_key
        self.share = share
        self._pipelines = dict(pipelines or {})
        self._workers: dict[str, Any] = {}
        self._scorer = None
        self._locks = (threading.Lock(), threading.Lock())
        self._guard = threading.Lock()

    def _worker(self, arm: str):
        from llmpopcorn.runs.worker import ItemWorker

        with self._guard:
            worker = self._workers.get(arm)
            if worker is None:
                self._workers.clear()  # the previous arm has ended (see the docstring)
                worker = ItemWorker(
                    self.arms[arm],
                    self.api_key,
                    self.share,
                    pipeline=self._pipelines.pop(arm, None),
                    scorer=self._scorer,
                    locks=self._locks,
                    summarize=cell_result,
                )
                worker.warm()
                if self._scorer is None and worker.pipeline.judge_ready:
                    self._scorer = worker.pipeline.scorer
                self._workers[arm] = worker
            return worker

    def warm(self) -> None:
        self._worker(next(iter(self.arms)))

    def ideate(self, task: dict[str, Any]) -> dict[str, Any]:
        return self._worker(task["arm"]).ideate(task)

    def ideate_score(self, task: dict[str, Any]) -> dict[str, Any]:
        return self._worker(task["arm"]).ideate_score(task)

    def render(self, state: dict[str, Any]) -> dict[str, Any]:
        return self._worker(state["arm"]).render(state)

    def score(self, state: dict[str, Any]) -> dict[str, Any]:
        return self._worker(state["arm"]).score(state)


class StudyWork(Work):
    """The study's part of the driver: a cell's stored result is its summary row."""

    kind = CELL

    def __init__(self, group: str, retry_failed: bool, on_cell, run: StudyRun):
        super().__init__(group)
        self.retry_failed = retry_failed
        self.on_cell = on_cell
        self.run = run

    def result(self, unit: Unit, state: dict[str, Any]) -> dict[str, Any] | None:
        # a failed cell keeps who was asked and why it failed (the attrition tables)
        return state.get("summary") or failed_result(state["record"], state.get("error"))

    def ended(self, unit: Unit, state: dict[str, Any], ok: bool) -> None:
        self.run.computed += 1
        self.run.failed += not ok
        if not ok:
            log.warning("cell %s failed: %s", unit.key, state.get("error"))
        if self.on_cell:
            self.on_cell(unit.key, unit.data, "ok" if ok else "failed")

    def not_claimed(self, unit: Unit, outcome: str) -> None:
        busy = outcome == "busy"
        self.run.busy += busy
        self.run.skipped += not busy
        if self.on_cell:
            self.on_cell(unit.key, unit.data, "busy" if busy else "skipped")


def run_study(
    plan: StudyPlan,
    settings: Settings,
    out_dir: str | Path,
    *,
    retry_failed: bool = True,
    on_cell: Callable[[str, Arm, str], None] | None = None,
    pipeline_factory: Callable[[Settings], Pipeline] | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    concurrency: int = 1,
    render_slots: int | None = None,
    executor: str | Executor = "local",
    address: str | None = None,
    poll_s: float = 0.2,
) -> StudyRun:
    """Run every cell of ``plan`` that is not finished or held by another process, arm
    after arm, on an executor (:mod:`llmpopcorn.runs.executors`) through the run store's
    driver (:mod:`llmpopcorn.runs.driver`): up to ``concurrency`` cells ideate at once (they
    wait on the LLM), rendering runs on its own bounded pool, the predictor loads once.

    A failing cell (an LLM that keeps answering badly, a render error) is recorded and
    the study goes on. A problem with the setup (a bad setting, missing data, a missing
    extra, a store that cannot be written, a full disk) would fail every cell alike: it
    is recorded for the cell and stops the study with an error. An interrupt (Ctrl-C,
    SIGTERM) gives the cells in flight back (``pending``); a rerun takes them at once.
    An API key's exhausted quota pauses the study the same way, with an error saying so.
    """
    from llmpopcorn.backends.hosted.costs import batch_budget, check_batch_cost
    from llmpopcorn.runs.driver import (
        Progress,
        cleanup_staging,
        drive,
        make_runner,
        on_gpu,
        slots_for,
    )
    from llmpopcorn.runs.executors import LocalExecutor, WorkerSpec

    if settings.variants != 1:
        raise ConfigError(
            f"the study scores one idea a cell; variants is {settings.variants}",
            "unset --variants / POPCORN_VARIANTS (popcorn batch --variants N ranks variants)",
        )
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    run = StudyRun(out_dir / "store.sqlite")
    predictor = predictor_identity(settings)
    corpus = corpus_identity(settings)
    group = group_of(settings, predictor, corpus)
    staging = out_dir / ".staging" / group
    with Store(run.store_path) as store:
        # every arm's LLM first: a bad backend name stops the study before any cell
        arms: list[tuple[Arm, Settings, str, Pipeline | None]] = []
        for arm in plan.arms(settings):
            cell_settings = arm_settings(settings, arm, out_dir)
            pipeline = pipeline_factory(cell_settings) if pipeline_factory else None
            llm = pipeline.llm if pipeline else registry.create("llm", arm.llm, cell_settings)
            identity = cell_identity(
                cell_settings, llm_model=llm.model_id(), predictor=predictor, corpus_sha256=corpus
            )
            arms.append((arm, cell_settings, store.put_settings(identity), pipeline))
        units: dict[str, deque[Unit]] = {}
        for arm, _, settings_hash, _ in arms:
            ident = arm_id(arm)
            queue = units.setdefault(ident, deque())
            for query, seed in itertools.product(plan.queries, plan.seeds):
                key = cell_key(query, seed, settings_hash)
                run.keys.append(key)
                labels = {
                    "query_id": query.query_id,
                    "query_kind": query.kind,
                    "query": query.text,
                    "llm": arm.llm,
                    "mode": arm.mode,
                    "refs": arm.refs,
                    "video": arm.video,
                    "seed": seed,
                    "refine": arm.rounds,
                }
                name = f"{query.query_id}-{ident}-s{seed}-{key[5:13]}"
                task = {
                    "key": key,
                    "arm": ident,
                    "query": query.text,
                    "variant": 0,
                    "variants": 1,
                    "seed": seed,
                    "staging": str(staging / key),
                    "final": str(out_dir / "runs" / slugify(name, max_len=120)),
                }
                queue.append(Unit(key, settings_hash, labels, task, data=arm))
        # an arm's video backend may render on a GPU even when the base settings' does not
        # (--video names the arms' backends): size the render pool and the Ray render
        # workers' resources from such an arm
        renders = next((s for _, s, _, _ in arms if s.render and on_gpu(s)), settings)
        slots = slots_for(renders, concurrency, render_slots)
        runner = make_runner(executor, renders, address)
        run.executor = runner.describe()
        worker_arms = {arm_id(a): s.public() for a, s, _, _ in arms}
        if pipeline_factory is not None:
            if not isinstance(runner, LocalExecutor):
                raise ConfigError("prebuilt pipelines need the local executor", "")
            built = {arm_id(a): p for a, _, _, p in arms}
            spec = WorkerSpec(StudyWorker, local=StudyWorker(worker_arms, pipelines=built))
        else:
            spec = WorkerSpec(StudyWorker, {"arms": worker_arms, "api_key": settings.api_key()})
        work = StudyWork(group, retry_failed, on_cell, run)
        progress = Progress(total=len(run.keys))
        # cells already finished (or failed, when not retried) are skipped without
        # starting the executor: rerunning a finished study loads no model
        ended = {"ok"} if retry_failed else {"ok", "failed"}
        status = {key: store.status(key) for key in run.keys}
        for ident, queue in units.items():
            for unit in queue:
                if status[unit.key] in ended:
                    work.not_claimed(unit, "done" if status[unit.key] == "ok" else "failed")
            units[ident] = deque(u for u in queue if status[u.key] not in ended)
        if not any(units.values()):
            return run
        # hosted generators: refuse a study over its cost cap before the first cell
        limit, estimate = settings.max_batch_cost, 0.0
        for (_, cell_settings, _, _), queue in zip(arms, units.values(), strict=True):
            if queue and cell_settings.render:
                left = None if limit is None else limit - estimate
                estimate += check_batch_cost(cell_settings, len(queue), left)
        with batch_budget():
            runner.start(spec, slots, render=settings.render)
            try:
                for queue in units.values():
                    outcome = drive(
                        store, runner, queue, work, progress=progress, slots=slots,
                        render=settings.render, lease_s=lease_s, poll_s=poll_s,
                    )  # fmt: skip
                    if outcome.pause_reason or outcome.setup_error:
                        break
            finally:
                runner.shutdown(cancel=True)
    cleanup_staging(staging)
    if outcome.pause_reason:
        raise PopcornError(
            f"the study paused: {outcome.pause_reason}",
            "top up the key's quota (or raise the cap) and rerun the same command: "
            "finished cells are kept and the rest are computed",
        )
    if outcome.setup_error:
        full = outcome.setup_error.startswith("disk full")
        raise PopcornError(
            "the study stopped: "
            + (f"the disk is full ({outcome.setup_error})" if full else outcome.setup_error),
            ("free some space" if full else "fix the problem")
            + " and rerun the same command: finished cells are kept and this one is retried",
        )
    return run


CSV_COLUMNS = (
    "query_id",
    "query_kind",
    "query",
    "llm",
    "is_llm",
    "ideator",
    "ideator_model",
    "mode",
    "refs",
    "video",
    "seed",
    "status",
    "title",
    "log2_comments",
    "expected_comments",
    "predictor",
    "category",
    "refs_shown",
    "refs_in_judge_memory",
    "refs_title_in_judge_data",
    "refs_near_judge_data",
    "pe_pool",
    "attempts",
    "failure",
    "error",
    "seconds",
    "run_dir",
    "settings_hash",
    "key",
    # the loop arm (--arms ...,refine): its rounds and both loop judges' scores
    "refine",
    "reward_log2",
    "evaluation_log2",
)


def cell_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store items flattened to one dict per cell (labels, result, status)."""
    rows = []
    for item in items:
        row = {c: None for c in CSV_COLUMNS}
        row.update(item["labels"])
        row.update(item["result"])
        for c in ("status", "error", "seconds", "run_dir", "settings_hash", "key"):
            row[c] = item[c]
        rows.append(row)
    return rows


def study_rows(store_path: str | Path, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The cells of one study: ``keys`` (a :class:`StudyRun`'s), else every cell in the
    store, which must then come from one group of settings (else a ConfigError says which
    groups there are)."""
    with Store(store_path) as store:
        if keys is not None:
            order = {k: i for i, k in enumerate(keys)}
            items = sorted(store.items(kind=CELL, keys=keys), key=lambda it: order[it["key"]])
        else:
            groups = store.groups(CELL)
            if len(groups) > 1:
                listed = ", ".join(f"{g} ({n} cells)" for g, n in sorted(groups.items()))
                raise ConfigError(
                    f"{store_path} holds cells made with {len(groups)} incompatible groups of "
                    f"settings: {listed}",
                    "rerun the study command whose summary you want (it summarises exactly "
                    "its own cells), or use a separate --out folder per configuration",
                )
            items = store.items(kind=CELL)
    return cell_rows(items)
