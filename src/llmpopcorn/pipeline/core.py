"""The pipeline: query -> prompt (basic or PE) -> ideate -> render -> score -> report.

The CLI and the web UI are thin shells over :class:`Pipeline`. Every run writes a
record as it goes: a failure at any stage still leaves ``record.json`` (status
``failed``, the error, and everything done before it) and ``report.html``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from llmpopcorn import __version__
from llmpopcorn.backends.base import LLM, ImageBackend, ImageRequest, VideoBackend, VideoRequest
from llmpopcorn.backends.media import fit_duration, save_png, write_mp4
from llmpopcorn.core.errors import (
    ConfigError,
    InvalidReplyError,
    LLMError,
    MissingExtraError,
    PopcornError,
)
from llmpopcorn.core.paths import clean_query, make_run_dir, new_run_id
from llmpopcorn.core.registry import Registry
from llmpopcorn.core.registry import registry as default_registry
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import (
    Artifact,
    BackendUse,
    Idea,
    Prompt,
    RunRecord,
    Score,
    Variant,
    utcnow,
)
from llmpopcorn.corpus.hashtags import corpus_for_tags, hashtags_for
from llmpopcorn.enhance.fit import fit_prompt, messages_for
from llmpopcorn.pipeline.ideate import IdeationResult, SamplingParams, failure_reason, ideate
from llmpopcorn.pipeline.report import save_record, save_report
from llmpopcorn.pipeline.variants import (
    diversify,
    duplicates_note,
    similar_title,
    variant_check,
)

log = logging.getLogger(__name__)

#: prompt builders by mode; "module:attr" so PE's heavy imports load only when used
MODE_BUILDERS = {
    "basic": "llmpopcorn.enhance.prompts:BasicPromptBuilder",
    "pe": "llmpopcorn.enhance.pe:PEPromptBuilder",
}

NO_LLM_NOTE = (
    "No LLM was used: the offline composer built this idea from the query with fixed "
    "templates. Plug in a real model with --llm local (a small model on this machine, no "
    "key), --llm deepseek (DEEPSEEK_API_KEY), --llm openai, or --llm ollama / vllm / "
    "llamacpp (a local server)."
)


class PromptBuilder(Protocol):
    def build(self, query: str) -> Prompt: ...


class Scorer(Protocol):
    """A popularity judge. ``category`` is the run's category (resolved once per run
    from the query); an empty one lets the scorer resolve it itself."""

    name: str

    def score(
        self,
        idea: Idea,
        *,
        query: str | None = None,
        clip_path: Path | None = None,
        category: str = "",
    ) -> Score: ...


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


class Pipeline:
    """One configured pipeline; reuse it for many queries (backends load once)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        llm: LLM | None = None,
        image: ImageBackend | None = None,
        video: VideoBackend | None = None,
        scorer: Scorer | None = None,
        prompt_builder: PromptBuilder | None = None,
        registry: Registry = default_registry,
    ):
        self.settings = settings or Settings.resolve()
        self.registry = registry
        self._given = {"llm": llm, "image": image, "video": video}
        self._scorer = scorer
        self._builder = prompt_builder

    # -- components, created on first use ------------------------------------------

    def _backend(self, kind: str) -> Any:
        given = self._given.get(kind)
        if given is None:
            given = self.registry.create(kind, getattr(self.settings, kind), self.settings)
            self._given[kind] = given
        return given

    @property
    def llm(self) -> LLM:
        return self._backend("llm")

    @property
    def image(self) -> ImageBackend:
        return self._backend("image")

    @property
    def video(self) -> VideoBackend:
        return self._backend("video")

    @cached_property
    def prompt_builder(self) -> PromptBuilder:
        if self._builder is not None:
            return self._builder
        mode = self.settings.mode
        if mode not in MODE_BUILDERS:
            raise ConfigError(f"unknown mode '{mode}'", f"use one of: {', '.join(MODE_BUILDERS)}")
        cls = _load(MODE_BUILDERS[mode])
        factory = getattr(cls, "from_settings", None)
        return factory(self.settings) if factory else cls()

    @cached_property
    def scorer(self) -> Scorer | None:
        if self._scorer is not None or not self.settings.score:
            return self._scorer
        return self._default_scorer()

    def _default_scorer(self) -> Scorer:
        """The predictor selected by the settings, through the registry: a registered
        predictor name (a plugin) or, for anything else, the shipped scorer reading the
        model directory ``settings.predictor`` (default: the shipped model)."""
        name = self.settings.predictor or "default"
        if name not in self.registry.names("predictor"):
            name = "default"  # a model directory or a model shipped under models/
        return self.registry.create("predictor", name, self.settings)

    def category_ranking(self, query: str) -> list | None:
        """The run's categories, best first, from the one resolver a run uses: the
        judge's (its retrieval memory) when a predictor is loaded, so that basic and PE
        runs of a query, the score and the report share one category; None otherwise
        (PE then ranks with its corpus index)."""
        rank = getattr(self.scorer, "rank_categories", None) if self.judge_ready else None
        return (rank(query) or None) if rank is not None else None

    def _build_prompt(self, query: str, ranking: list | None) -> Prompt:
        builder = self.prompt_builder
        if ranking and getattr(builder, "accepts_categories", False):
            prompt = builder.build(query, categories=ranking)
        else:
            prompt = builder.build(query)
        if not self.settings.post_text:  # only the paper's three fields (the study's default)
            prompt = prompt.model_copy(update={"post_text": False})
            prompt.messages = messages_for(prompt, prompt.references, example=True)
        return prompt

    def run_category(
        self, query: str, prompt: Prompt, ranking: list | None = None
    ) -> dict[str, Any] | None:
        """The run's category (used by the scorer, the variants' ranking and the report)."""
        if ranking:
            name = ranking[0].name
            if prompt.mode == "pe" and prompt.settings.get("categories"):
                # PE used the first ranked category its corpus holds
                name = prompt.settings["categories"][0]["name"]
            return {
                "name": name,
                "source": "the judge's category resolver (its retrieval memory)",
                "method": self.settings.category_match,
            }
        if prompt.mode == "pe" and prompt.settings.get("categories"):
            first = prompt.settings["categories"][0]
            return {
                "name": first["name"],
                "source": "PE's category resolver (corpus index)",
                "method": prompt.settings.get("category_match"),
            }
        return None

    def plan(
        self, query: str, *, judge_lock: AbstractContextManager | None = None
    ) -> tuple[Prompt, dict[str, Any] | None]:
        """A run's prompt and its category, from the one category resolver a run uses
        (:meth:`category_ranking`); shared by :meth:`make`, batches and the study.
        ``judge_lock``: held while the predictor ranks categories (it is used from one
        thread at a time)."""
        with judge_lock or nullcontext():
            ranking = self.category_ranking(query)
        prompt = fit_prompt(self._build_prompt(query, ranking), self.llm, self.settings.max_tokens)
        category = self.run_category(query, prompt, ranking)
        # for the offline stand-in's hashtags: what popular videos of the category use
        corpus = getattr(self.prompt_builder, "corpus", None)  # PE's, else the data folder's
        tags = hashtags_for(
            category and category["name"], corpus or corpus_for_tags(self.settings.data_dir)
        )
        prompt.context.update(category=tags["category"], category_hashtags=tags["hashtags"])
        return prompt, category

    @staticmethod
    def apply_prompt(record: RunRecord, prompt: Prompt) -> None:
        """What a run record keeps of its prompt: the messages, the references and, in
        PE mode, the enhancement's settings and notes."""
        record.messages = list(prompt.messages)
        record.references = list(prompt.references)
        if prompt.mode == "pe":
            record.enhancement = prompt.settings
            record.notes += [f"PE: {note}" for note in prompt.settings.get("notes", [])]

    def sampling(self, seed: int | None = None) -> SamplingParams:
        s = self.settings
        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            seed=s.seed if seed is None else seed,
            max_tokens=s.max_tokens,
            max_attempts=s.max_attempts,
        )

    # -- the stages ------------------------------------------------------------------
    #
    # make(), batch items and study cells (llmpopcorn.runs.worker), web jobs and MCP
    # tools (through make) all run a query through these public stages:
    #   new_record -> prepare -> plan + apply_prompt -> ideate -> render -> score -> finish

    #: whether the judge loaded (set by :meth:`prepare`); False: the run goes unscored
    judge_ready = False

    def new_record(
        self, query: str, *, seed: int | None = None, run_dir: str | Path = ""
    ) -> RunRecord:
        """A fresh record for ``query`` (cleaned), with the settings minus secrets and the
        LLM backend (so that a run failing before it asks still names its LLM and model)."""
        settings = self.settings
        record = RunRecord(
            run_id=new_run_id(),
            query=clean_query(query),
            mode=settings.mode,
            seed=settings.seed if seed is None else seed,
            package_version=__version__,
            run_dir=str(run_dir),
            settings=settings.public(),
        )
        try:
            record.backends["llm"] = self.llm.describe()
        except PopcornError:  # a misconfigured LLM fails where it is used, with the record
            pass
        return record

    def prepare(self, record: RunRecord) -> None:
        """Create the renderers (when rendering) and load the judge before the LLM is
        called: bad options, missing weights, too little memory or a broken model fail
        here. A missing extra for the predictor is noted on ``record`` and the run goes
        on unscored (:attr:`judge_ready` says which)."""
        if self.settings.render:
            self._backend("image")
            self._backend("video")
        self.judge_ready = False
        if not self.settings.score and self._scorer is None:
            return
        try:
            self.judge_ready = self.scorer is not None
        except MissingExtraError as exc:
            record.notes.append(f"Not scored: {exc.message}; {exc.hint}.")

    def prompt(self, query: str) -> Prompt:
        """The exact messages that would be sent for ``query`` (no LLM call), with the
        same category choice as :meth:`make`."""
        query = clean_query(query)
        if self.settings.mode == "pe" and not self.judge_ready and self.settings.score:
            try:
                self.judge_ready = self.scorer is not None
            except PopcornError as exc:  # no judge: PE ranks categories with its own index
                log.warning("categories from PE's corpus index (the judge is unavailable: %s)", exc)
                self.judge_ready = False
        prompt = self._build_prompt(query, self.category_ranking(query))
        return fit_prompt(prompt, self.llm, self.settings.max_tokens)

    def ask_variant(
        self, prompt: Prompt, *, number: int, count: int, seed: int, avoid: Sequence[str] = ()
    ) -> Asked:
        """Ask the LLM for variant ``number`` of ``count`` (its own angle when ``count``
        > 1), re-asked when it copies a PE reference or nearly repeats one of ``avoid``
        (the titles earlier variants got). Raises :class:`InvalidReplyError` when no
        valid idea came within ``max_attempts``. The one place variants are asked."""
        make_guard = getattr(self.prompt_builder, "copy_guard", None)
        guard = make_guard(prompt) if make_guard else None
        asked = diversify(prompt, number, count, avoid)
        result = ideate(self.llm, asked, self.sampling(seed), check=variant_check(guard, avoid))
        return Asked(result, guard, seed, similar_title(result.idea.title, avoid))

    def ideate(
        self,
        record: RunRecord,
        prompt: Prompt,
        *,
        variant: int | None = None,
        variants: int = 1,
        avoid: Sequence[str] = (),
    ) -> Asked:
        """Ask the LLM for the run's idea and keep it on ``record``.

        By default ``settings.variants`` ideas (seeds seed, seed+1, ...), the one the
        predictor ranks highest kept (with one variant no ranking is needed). With
        ``variant``: only that variant of ``variants`` (a batch item, whose record's seed
        is already the variant's), avoiding the titles in ``avoid``."""
        llm = self.llm
        record.backends["llm"] = llm.describe()
        if not llm.is_llm:
            record.notes.append(NO_LLM_NOTE)
        if variant is not None:
            asked = self.ask_variant(
                prompt, number=variant, count=variants, seed=record.seed, avoid=avoid
            )
            self._keep(record, asked, asked.result.attempts)
            return asked
        count = self.settings.variants
        if count > 1 and self.scorer is None:
            raise ConfigError(
                "ranking variants needs the popularity predictor",
                "drop --variants, or enable scoring (no --no-score, POPCORN_SCORE unset)",
            )
        candidates: list[tuple[Score | None, Asked]] = []
        ranked: list[Variant] = []
        attempts: list = []
        titles: list[str] = []  # earlier variants' titles: a near repeat is re-asked
        for number in range(count):
            seed = record.seed + number
            try:
                asked = self.ask_variant(
                    prompt, number=number, count=count, seed=seed, avoid=titles
                )
            except InvalidReplyError as exc:
                if count == 1:
                    raise
                attempts += exc.attempts
                ranked.append(Variant(seed=seed, error=str(exc)))
                continue
            idea = asked.result.idea
            attempts += asked.result.attempts
            titles.append(idea.title)
            score = (
                self.scorer.score(idea, query=record.query, category=_name(record))
                if count > 1
                else None
            )
            candidates.append((score, asked))
            if score is not None:
                ranked.append(
                    Variant(
                        seed=seed,
                        idea=idea,
                        log2_comments=score.log2_comments,
                        expected_comments=score.expected_comments,
                        duplicate_of=asked.twin,
                    )
                )
        if not candidates:
            raise InvalidReplyError(
                f"none of the {count} variants produced a valid idea",
                "try another model or raise --max-attempts; the raw replies are in the run record",
                attempts=attempts,
            )
        if count == 1:
            asked = candidates[0][1]
            self._keep(record, asked, asked.result.attempts)
            return asked
        candidates.sort(key=lambda c: -c[0].log2_comments)  # stable: ties keep seed order
        ranked.sort(key=lambda v: -v.log2_comments if v.log2_comments is not None else 1e9)
        record.variants = ranked
        best = candidates[0][1]
        self._keep(record, best, attempts)
        note = duplicates_note(ranked)
        if note:
            record.notes.append(note)
        record.notes.append(
            f"Best of {count} variants by predicted popularity (variant seed {best.seed})."
        )
        return best

    def refine(self, record: RunRecord, prompt: Prompt, rounds: int | None = None) -> None:
        """Judge-guided refinement of ``record.idea``: ``rounds`` (default
        ``settings.refine``; 0: nothing) rounds in which the LLM sees the reward judge's
        score and explanation and writes an improved idea (:mod:`llmpopcorn.pipeline.refine`)."""
        rounds = self.settings.refine if rounds is None else rounds
        if rounds:
            from llmpopcorn.pipeline.refine import refine

            refine(self, record, prompt, rounds)

    @staticmethod
    def _keep(record: RunRecord, asked: Asked, attempts: list) -> None:
        result = asked.result
        record.idea = result.idea
        record.messages = result.messages
        record.attempts = list(attempts)
        if asked.guard:
            record.copy_check = asked.guard.report(result.idea)
        if asked.twin:
            record.notes.append(
                f'This title is still close to another variant\'s ("{asked.twin}") after '
                f"{len(result.attempts)} attempt(s)."
            )

    def render(self, record: RunRecord, run_dir: Path, stage: StageTimer | None = None) -> None:
        """Render the cover and the clip of ``record.idea`` into ``run_dir`` (each file
        is added to the record, and the record saved, as soon as it is written)."""
        idea = record.idea
        if idea is None:
            raise ConfigError("nothing to render: the run has no idea yet", "ideate first")
        stage = stage or timed_stage(record)
        run_dir = Path(run_dir)
        with stage("cover"):
            image = self.image
            record.backends["image"] = image.describe()
            picture = image.generate(
                ImageRequest(
                    prompt=idea.cover_prompt,
                    title=idea.title,
                    seed=record.seed,
                    keywords=list(idea.keywords),
                )
            )
            record.backends["image"] = image.describe()  # again: now with measured time/memory
            path = save_png(picture, run_dir / "cover.png")
            meta = {"width": picture.width, "height": picture.height}
            if picture.info.get("credit"):  # stock media: who made it, under which licence
                meta["credit"] = picture.info["credit"]
            _keep_artifact(record, run_dir, "cover", path, "image/png", image.name, meta)
        with stage("clip"):
            video = self.video
            record.backends["video"] = video.describe()
            clip = video.generate(
                VideoRequest(
                    prompt=idea.video_prompt,
                    title=idea.title,
                    seed=record.seed,
                    cover=picture,
                    keywords=list(idea.keywords),
                )
            )
            clip.frames = fit_duration(clip.frames, clip.fps, 3.0)
            path = write_mp4(clip, run_dir / "clip.mp4")
            height, width = clip.frames[0].shape[:2]
            meta = {
                "width": width,
                "height": height,
                "fps": clip.fps,
                "frames": len(clip.frames),
                "seconds": round(clip.seconds, 4),
                **clip.meta,
            }
            _keep_artifact(record, run_dir, "clip", path, "video/mp4", video.name, meta)

    def score(self, record: RunRecord, run_dir: Path) -> None:
        """The judge's score of ``record.idea`` (and the clip's visual statistics when
        there is a clip), with how independent the judge is of PE's references."""
        run_dir = Path(run_dir)
        clip = record.artifact("clip")
        if clip is not None and self.settings.score:
            from llmpopcorn.predict.visual import clip_stats

            try:
                record.visual_stats = clip_stats(run_dir / clip.path)
            except PopcornError as exc:
                record.notes.append(f"No visual statistics: {exc}")
        if not self.judge_ready:
            if self.settings.score and not any(n.startswith("Not scored") for n in record.notes):
                record.notes.append("Not scored: no popularity predictor is available.")
            return
        scorer = self.scorer
        record.score = scorer.score(
            record.idea,
            query=record.query,
            clip_path=(run_dir / clip.path) if clip else None,
            category=_name(record),
        )
        record.backends["predictor"] = BackendUse(
            name=getattr(scorer, "name", type(scorer).__name__), kind="predictor"
        )
        # PE's corpus index (its embeddings count near-duplicates); no references: none
        index = getattr(self.prompt_builder, "index", None) if record.references else None
        independence = judge_overlap(scorer, record.references, record.score, index=index)
        if independence is not None:
            record.score.extra["independence"] = independence
            known = independence["references_in_judge_memory"]
            by_title = independence.get("references_title_in_judge_data") or 0
            if known or by_title:
                record.notes.append(
                    f"Judge independence: {known} of {independence['references']} PE "
                    f"references are in the judge's training memory and {by_title} share a "
                    "normalised title with a video it learned from, so the score is not "
                    "independent of them (the study uses --pe-pool reference --predictor "
                    "judge: zero overlap by id and by title)."
                )

    @staticmethod
    def finish(record: RunRecord, run_dir: Path) -> None:
        """Save ``report.html`` and then ``record.json`` into ``run_dir``: a record says
        ``ok`` only when its report was written too (a report that cannot be written
        fails an ``ok`` run, is noted, and its OSError is raised after the record is
        saved)."""
        run_dir = Path(run_dir)
        if record.finished is None:
            record.finished = utcnow()
        report_error: OSError | None = None
        try:
            save_report(record, run_dir)
        except OSError as exc:  # disk full, permissions: say so in the record
            report_error = exc
            record.notes.append(f"report.html could not be written: {exc}")
            if record.status == "ok":
                record.status = "failed"
                record.error = f"could not write report.html: {exc}"
        save_record(record, run_dir)
        if report_error is not None and (record.error or "").startswith("could not write report"):
            raise report_error

    # -- one query, every stage ---------------------------------------------------

    def make(
        self,
        query: str,
        *,
        out_dir: str | Path | None = None,
        on_stage: Callable[[str], None] | None = None,
        seed: int | None = None,
    ) -> RunRecord:
        """Run every stage for one query and return the saved record.

        ``seed`` overrides the settings' seed for this run (LLM sampling and rendering).
        """
        record = self.new_record(query, seed=seed)
        run_dir = make_run_dir(Path(out_dir or self.settings.out_dir), record.query, record.run_id)
        record.run_dir = str(run_dir)
        save_record(record, run_dir)
        stage = timed_stage(record, on_stage)
        try:
            self.prepare(record)  # before the LLM: renderers and judge fail here
            with stage("prompt"):
                prompt, category = self.plan(record.query)
                self.apply_prompt(record, prompt)
            record.category = category
            with stage("ideate"):
                self.ideate(record, prompt)
            if self.settings.refine:
                with stage("refine"):
                    self.refine(record, prompt)
            if self.settings.render:
                self.render(record, run_dir, stage)
            with stage("score"):
                self.score(record, run_dir)
            record.status = "ok"
        except BaseException as exc:
            mark_failed(record, exc)
            raise
        finally:
            record.finished = utcnow()
            self.finish(record, run_dir)
        return record


@dataclass
class Asked:
    """One variant's answer: the ideation result, PE's copy guard for it (None in basic
    mode), its seed, and the earlier variant's title it still nearly repeats (if any)."""

    result: IdeationResult
    guard: Any
    seed: int
    twin: str | None = None


#: ``stage(name)``: a context manager timing one stage into ``record.timings[name]``
StageTimer = Callable[[str], AbstractContextManager[None]]


def timed_stage(record: RunRecord, on_stage: Callable[[str], None] | None = None) -> StageTimer:
    """A :data:`StageTimer` for ``record`` that first tells ``on_stage`` (progress)."""

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        if on_stage:
            on_stage(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            record.timings[name] = round(time.perf_counter() - started, 4)

    return stage


def mark_failed(record: RunRecord, exc: BaseException) -> None:
    """The record of a run stopped by ``exc``: Ctrl-C or a signal (``signals.Interrupted``
    is a KeyboardInterrupt) is ``interrupted``, anything else ``failed``; the attempts of
    an LLM that never answered validly are kept."""
    interrupted = isinstance(exc, KeyboardInterrupt)
    record.status = "interrupted" if interrupted else "failed"
    record.error = (str(exc) or "interrupted") if interrupted else (str(exc) or type(exc).__name__)
    attempts = getattr(exc, "attempts", None)
    if attempts:
        record.attempts = list(attempts)
    if interrupted or attempts or isinstance(exc, LLMError):
        record.failure = failure_reason(exc)


def _name(record: RunRecord) -> str:
    return (record.category or {}).get("name") or ""


def judge_memory(scorer: Any) -> set[str] | None:
    """The video ids in a judge's retrieval memory, computed once per scorer (None when
    it has no memory to check). Used by the run record and by the study."""
    cached = getattr(scorer, "_memory_id_set", None)
    if cached is not None:
        return cached
    memory_ids = getattr(scorer, "memory_ids", None)
    ids = (
        memory_ids()
        if callable(memory_ids)
        else getattr(getattr(scorer, "model", None), "memory_ids_", None)
    )
    if ids is None:
        return None
    cached = {str(v) for v in ids}
    try:
        scorer._memory_id_set = cached
    except AttributeError:  # a scorer with __slots__: recompute next time
        pass
    return cached


def judge_overlap(
    scorer: Any, references: list, score: Score, *, index: Any = None
) -> dict[str, Any] | None:
    """How independent the judge is of PE's references: how many references sit in its
    retrieval memory, and how many of the neighbours explaining the score are
    references. With ``index`` (PE's corpus index) also how many share a normalised title
    with, or are near-duplicates of, a video the judge learned from
    (:func:`llmpopcorn.corpus.independence.reference_overlap`, the study's count too).
    None when the judge has no memory to check."""
    memory = judge_memory(scorer)
    if memory is None:
        return None
    ref_ids = {str(r.video_id) for r in references}
    neighbours = [str(n.video_id) for n in score.neighbours]
    out = {
        "judge": getattr(scorer, "name", type(scorer).__name__),
        "judge_part": getattr(scorer, "part", "all"),
        "references": len(ref_ids),
        "references_in_judge_memory": len(ref_ids & memory),
        "neighbours": len(neighbours),
        "neighbours_that_are_references": sum(n in ref_ids for n in neighbours),
    }
    corpus = getattr(index, "corpus", None)
    if references and corpus is not None:
        from llmpopcorn.corpus.independence import judge_data, reference_overlap

        found = reference_overlap(
            references, judge_data(corpus, str(out["judge_part"]), memory), index=index
        )
        out |= {
            "references_title_in_judge_data": found["by_title"],
            "references_near_judge_data": found["near_duplicates"],
            "near_duplicate_cosine": found["cosine"],
            "overlap_method": found["method"],
        }
    return out


def _keep_artifact(
    record: RunRecord,
    run_dir: Path,
    kind: str,
    path: Path,
    media_type: str,
    backend: str,
    meta: dict,
) -> None:
    """Add a written file to the record and save the record at once (so a later crash
    still lists it)."""
    record.artifacts.append(
        Artifact(
            kind=kind,
            path=path.name,
            media_type=media_type,
            bytes=path.stat().st_size,
            backend=backend,
            meta=meta,
        )
    )
    save_record(record, run_dir)
