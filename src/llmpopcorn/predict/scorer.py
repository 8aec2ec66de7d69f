"""Score generated ideas with a saved predictor: value, interval, percentile, why.

The shipped default model lives in ``llmpopcorn/predict/models/default`` (weights and a
retrieval memory of embeddings, labels, ids and categories; no corpus text).
Neighbour titles are looked up in the corpus when ``POPCORN_DATA`` / ``--data`` is
set; without it the explanation still has ids, comment counts and similarities.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from llmpopcorn.core.errors import DataError, InputError, MissingExtraError
from llmpopcorn.core.types import Idea, Reference, Score
from llmpopcorn.predict.base import load_model, read_config
from llmpopcorn.predict.data import Table
from llmpopcorn.predict.embed import EMBEDDER_NEEDS
from llmpopcorn.predict.mmra import UNKNOWN

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "default"
N_EXPLAIN = 5


def resolve_model_dir(predictor: str | Path | None) -> Path:
    """``None`` / ``"default"``: the shipped model; a name under ``models/``; or a path."""
    if predictor is None or str(predictor) in ("", "default"):
        path = DEFAULT_MODEL
    elif (MODELS_DIR / str(predictor)).is_dir() and "/" not in str(predictor):
        path = MODELS_DIR / str(predictor)
    else:
        path = Path(predictor).expanduser()
    if not (path / "config.json").exists():
        raise DataError(
            f"no predictor model at {path}",
            "set POPCORN_PREDICTOR to a directory written by `popcorn predictor train`, "
            "or leave it unset for the shipped model",
        )
    return path


def check_embedder_available(name: str | None, what: str = "scoring") -> None:
    import importlib.util

    modules, extra = EMBEDDER_NEEDS.get(name or "", ((), ""))
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(module, extra, f"{what} with the '{name}' embedder")


#: what a model trained before inputs were declared learned from: the MicroLens table's
#: titles (its cover_desc copies the title and its caption is empty) and categories
LEGACY_INPUTS = {"text_fields": ["title"], "category": True}
#: corpus text field -> the idea field that *is* that field. An idea's cover prompt is
#: an instruction to an image model, not a description of a cover, and its video prompt
#: is not a caption: neither stands in for a field the model learned from.
IDEA_FIELD_FOR = {"title": "title", "cover_desc": None, "caption": None}
IDEA_FIELDS = ("title", "cover_prompt", "video_prompt")


class PopularityScorer:
    """Wraps a saved model; ``score(idea)`` returns a :class:`~llmpopcorn.core.types.Score`.

    It scores exactly the inputs the model learned from (``config.json`` ``inputs``;
    for the shipped models: title and category) and records which it used. The
    category comes from the caller (the pipeline resolves the query's once per run) or
    from the :class:`~llmpopcorn.corpus.categories.CategoryResolver` over the model's own
    retrieval memory."""

    kind = "predictor"
    description = "shipped MMRA-style predictor (or POPCORN_PREDICTOR=DIR): log2 comments"

    @classmethod
    def from_settings(cls, settings: Any) -> PopularityScorer:
        return load_scorer(settings)

    @classmethod
    def availability(cls, settings: Any = None) -> Any:
        """Whether the selected model exists and its embedder's extra is installed."""
        from llmpopcorn.backends.base import Availability

        try:
            path = resolve_model_dir(getattr(settings, "predictor", None))
            embedder = read_config(path).get("params", {}).get("embedder")
            check_embedder_available(embedder)
        except (DataError, MissingExtraError) as exc:
            return Availability(False, f"{exc.message}: {exc.hint}")
        return Availability(True)

    def __init__(
        self,
        model_dir: str | Path,
        data_dir: str | Path | None = None,
        *,
        category_match: str = "centroid",
        min_category_size: int = 50,
        calibration_dir: str | Path | None = None,
    ):
        """``calibration_dir``: the creator's output folder; when it holds a calibration
        of this model (``popcorn predictor calibrate``), every score also carries the
        calibrated value (``extra["calibrated"]``) beside the judge's own."""
        self.model_dir = Path(model_dir)
        self.config = read_config(self.model_dir)
        check_embedder_available(self.config.get("params", {}).get("embedder"))
        self.model = load_model(self.model_dir)
        self.data_dir = data_dir
        conformal = self.config.get("conformal") or {}
        self.halfwidth: float | None = conformal.get("halfwidth")
        self.level: float | None = conformal.get("level")
        self.name = f"{self.model.name}@{self.model_dir.name}"
        self.inputs_declared = "inputs" in self.config
        self.inputs: dict[str, Any] = dict(self.config.get("inputs") or LEGACY_INPUTS)
        self.category_match = category_match
        self.min_category_size = min_category_size
        self._titles: dict[str, str] | None = None
        self._resolver: Any = None
        self._memory_cache: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]] | None = None
        self.calibration_dir = calibration_dir
        self._calibration: tuple[float | None, Any] = (None, None)

    def calibration(self) -> Any:
        """The creator's calibration of this model (None without one), re-read when its
        file changes, so a running studio picks up a new fit."""
        if self.calibration_dir is None:
            return None
        from llmpopcorn.predict.calibration import calibration_path, load_calibration

        try:
            stamp = calibration_path(self.calibration_dir).stat().st_mtime_ns
        except OSError:
            return None
        if self._calibration[0] != stamp:
            self._calibration = (stamp, load_calibration(self.calibration_dir, self.name))
        return self._calibration[1]

    # -- what the judge is ------------------------------------------------------------

    @property
    def part(self) -> str:
        """The corpus part the model was trained on (``all`` for older models)."""
        return str(self.config.get("train", {}).get("partition", {}).get("part", "all"))

    def memory_ids(self) -> np.ndarray:
        """Video ids in the model's retrieval memory (what it "remembers")."""
        return np.asarray(getattr(self.model, "memory_ids_", np.zeros(0)), dtype=str)

    def describe(self) -> dict[str, Any]:
        train = self.config.get("train", {})
        return {
            "predictor": self.name,
            "model_dir": self.model_dir.name,
            "part": self.part,
            "trained_rows": train.get("rows"),
            "train_sha256": train.get("data_sha256"),
            "code_version": train.get("code_version"),
            "inputs": self.inputs,
            "inputs_declared": self.inputs_declared,
        }

    # -- categories ---------------------------------------------------------------------

    @property
    def resolver(self) -> Any:
        """The category resolver over the model's retrieval memory (built once)."""
        if self._resolver is None:
            from llmpopcorn.corpus.categories import CategoryProfile, CategoryResolver
            from llmpopcorn.corpus.partition import corpus_share
            from llmpopcorn.predict.embed import embed_function

            m = self.model
            if not hasattr(m, "memory_cat_"):
                raise DataError(
                    f"the {m.name} model has no retrieval memory to resolve categories from",
                    "pass a category, or use a retrieval model (mmra)",
                )
            embed = embed_function(m.embedder)
            counts = np.bincount(m.memory_cat_, minlength=len(m.categories_))
            # memory counts scaled to the whole corpus, so the minimum size means the same
            # number of videos as in PE's corpus index
            rows = float(self.config.get("train", {}).get("rows") or len(m.memory_cat_))
            share = corpus_share(self.part)
            scale = rows / max(len(m.memory_cat_), 1) / share
            names = [str(c) for c in m.categories_]
            keep = [i for i, n in enumerate(names) if n != UNKNOWN]
            profile = CategoryProfile.from_members(
                names,
                m.memory_cat_,
                m.memory_,
                name_vectors=embed(names) if self.category_match == "name" else None,
                sizes=np.round(counts * scale).astype(np.int64),
                source=f"predictor memory ({self.name})",
            )
            profile.names = [names[i] for i in keep]
            profile.sizes = profile.sizes[keep]
            profile.centroids = profile.centroids[keep]
            if profile.name_vectors is not None:
                profile.name_vectors = profile.name_vectors[keep]
            self._resolver = CategoryResolver(
                profile, embed, method=self.category_match, min_size=self.min_category_size
            )
        return self._resolver

    def rank_categories(self, text: str) -> list:
        """Categories for ``text`` best first
        (:class:`~llmpopcorn.corpus.categories.CategoryChoice`; empty for a model with no
        retrieval memory)."""
        if not hasattr(self.model, "memory_cat_"):
            return []
        return self.resolver.rank(text)

    def resolve_category(self, text: str) -> str:
        """The best category for ``text`` (a query or a title); "" for a model with no
        retrieval memory (it then scores without a category)."""
        if not hasattr(self.model, "memory_cat_"):
            return ""
        return self.resolver.best(text)

    # -- scoring ------------------------------------------------------------------------

    def _corpus_titles(self) -> dict[str, str]:
        if self._titles is None:
            self._titles = {}
            if self.data_dir:
                from llmpopcorn.corpus.table import load_corpus

                try:
                    frame = load_corpus(self.data_dir).frame
                    self._titles = dict(zip(frame["video_id"], frame["title_en"], strict=True))
                except DataError as exc:
                    log.warning("neighbour titles unavailable: %s", exc)
        return self._titles

    def labels(self) -> np.ndarray:
        """The memory's labels in log2 comments."""
        return memory_labels(self.model)

    def input_text(self, fields: dict[str, str]) -> tuple[str, dict[str, str], list[str]]:
        """The model's text input from an idea's fields: (text, fields used, fields the
        model learned from that an idea does not have)."""
        from llmpopcorn.corpus.table import item_text

        used: dict[str, str] = {}
        missing: list[str] = []
        for name in self.inputs.get("text_fields", ["title"]):
            source = IDEA_FIELD_FOR.get(name)
            if source and fields.get(source, "").strip():
                used[name] = fields[source]
            else:
                missing.append(name)
        text = item_text(used.get("title", ""), used.get("cover_desc", ""), used.get("caption", ""))
        return text, used, missing

    def _memory_labels_and_categories(self) -> tuple[np.ndarray, np.ndarray]:
        """The memory's labels and each memory row's category name (computed once)."""
        if self._memory_cache is None:
            m = self.model
            self._memory_cache = (memory_labels(m), m.categories_[m.memory_cat_], {})
        return self._memory_cache[0], self._memory_cache[1]

    def _category_labels(self, category: str) -> np.ndarray:
        """The labels of the memory rows in ``category`` (kept per category)."""
        labels, member_cats = self._memory_labels_and_categories()
        per_category = self._memory_cache[2]
        if category not in per_category:
            per_category[category] = labels[member_cats == category]
        return per_category[category]

    def score_table(self, table: Table) -> list[Score]:
        """Score rows; rows with an empty category get the one the resolver picks for
        their text."""
        m = self.model
        started = time.perf_counter()
        cats = np.array(table.categories, dtype=object)
        resolved = np.zeros(len(table), dtype=bool)
        for row in range(len(table)):
            if str(cats[row]) in ("", UNKNOWN):
                cats[row] = self.resolve_category(table.titles[row] or table.texts[row])
                resolved[row] = True
        table.categories = cats
        with one_blas_thread(len(table) <= FEW_ROWS and cores_busy()):
            explained = explain(m, table)
            pred = explained["prediction"] if explained else m.predict(table)
        labels, member_cats = self._memory_labels_and_categories() if explained else (None, None)
        seconds = (time.perf_counter() - started) / max(len(table), 1)
        titles = self._corpus_titles() if explained else {}
        calibration = self.calibration()
        scores = []
        for row, value in enumerate(pred):
            value = float(value)
            cat = str(table.categories[row])
            percentile = None
            neighbours: list[Reference] = []
            extra: dict[str, Any] = {
                "model_dir": self.model_dir.name,
                "category_resolved": bool(resolved[row]),
                "seconds": round(seconds, 4),
                "train_sha256": self.config.get("train", {}).get("data_sha256"),
                "judge_part": self.part,
            }
            if explained:
                same = self._category_labels(cat)
                if same.size:
                    percentile = round(100.0 * float(np.mean(same <= value)), 1)
                if explained.get("attention") is not None:
                    att = explained["attention"][row]
                    extra["attention"] = [round(float(a), 4) for a in att]
                for j in range(min(N_EXPLAIN, explained["neighbours"].shape[1])):
                    mem = int(explained["neighbours"][row, j])
                    vid = str(m.memory_ids_[mem])
                    neighbours.append(
                        Reference(
                            video_id=vid,
                            title=titles.get(vid, ""),
                            category=str(member_cats[mem]),
                            comment_count=int(round(2 ** float(labels[mem]))),
                            similarity=round(float(explained["similarity"][row, j]), 4),
                        )
                    )
            interval = None
            if self.halfwidth is not None:
                interval = (round(value - self.halfwidth, 4), round(value + self.halfwidth, 4))
            if calibration is not None:
                extra["calibrated"] = calibration.describe_score(value, interval)
            scores.append(
                Score(
                    predictor=self.name,
                    log2_comments=round(value, 4),
                    expected_comments=round(2**value, 2),
                    interval=interval,
                    interval_level=self.level if interval else None,
                    percentile=percentile,
                    category=cat,
                    neighbours=neighbours,
                    extra=extra,
                )
            )
        return scores

    def score(
        self,
        idea: Idea,
        *,
        query: str | None = None,
        clip_path: str | Path | None = None,
        category: str = "",
    ) -> Score:
        """Score one idea from the fields the model learned from (and, for a model
        trained with visual features, its rendered clip)."""
        return self.score_text(
            idea.title,
            idea.cover_prompt,
            idea.video_prompt,
            category=category,
            query=query,
            clip_path=clip_path,
        )

    def score_text(
        self,
        title: str,
        cover_prompt: str = "",
        video_prompt: str = "",
        *,
        category: str = "",
        query: str | None = None,
        clip_path: str | Path | None = None,
    ) -> Score:
        """Score raw idea fields. Only the fields the model learned from are read (the
        score's ``extra["inputs"]`` says which); an empty ``category`` is resolved from
        the title (``query`` is only recorded)."""
        if not title.strip():
            raise InputError("the title is empty", "pass a non-empty --title")
        fields = {"title": title, "cover_prompt": cover_prompt, "video_prompt": video_prompt}
        text, used, missing = self.input_text(fields)
        source = "given"
        if not category.strip():  # the pipeline passes the run's category (from the query)
            category = self.resolve_category(title)
            source = "resolved from the title"
        table = Table(ids=["idea"], texts=[text], categories=[category], titles=[title])
        visual_dim = int(getattr(self.model, "visual_dim", 0) or 0)
        if visual_dim:
            if clip_path is None:
                raise InputError(
                    "this predictor also reads the rendered clip, and there is none",
                    "render a clip first, or use a text-only predictor",
                )
            from llmpopcorn.predict.visual import get_extractor, read_frames

            extractor = get_extractor(self.model.visual_extractor, visual_dim)
            table.visual = extractor.extract(read_frames(clip_path))[None, :]
        result = self.score_table(table)[0]
        result.extra["inputs"] = {
            "fields": used,
            "category": category,
            "category_source": source,
            "category_match": self.category_match if source != "given" else None,
            "not_read": [f for f in IDEA_FIELDS if f not in {IDEA_FIELD_FOR.get(k) for k in used}],
            "model_fields_missing": missing,
            "visual": bool(visual_dim),
            "declared_by_model": self.inputs_declared,
        }
        result.extra["category_resolved"] = source != "given"
        if query:
            result.extra["query"] = query
        return result


#: tables up to this many rows are scored with one BLAS thread when the cores are busy
#: (see :func:`one_blas_thread`)
FEW_ROWS = 64


def cores_busy() -> bool:
    """Whether the 1-minute load average leaves less than half a core free."""
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1) - 0.5
    except OSError:  # pragma: no cover - no load average on this platform
        return False


@contextmanager
def one_blas_thread(active: bool = True) -> Iterator[None]:
    """Run the block with one BLAS (OpenBLAS) thread, when ``active``.

    Scoring a few rows multiplies one embedding by the whole retrieval memory (13,392
    x 384 for the shipped model): a matrix-vector product bound by memory bandwidth.
    On 2 cores with the other one free, two BLAS threads take it in 1.7-2.8 ms against
    3.5-5 ms for one; with the cores busy (load 2), the second thread waits for a core
    and two take 6-8 ms against 2-4 ms for one: the scorer asks for one thread only
    when :func:`cores_busy`. The product per output is the same dot product either way
    (the scorer's tests compare every neighbour, similarity and prediction of both).
    Without threadpoolctl (a scikit-learn dependency) the block runs as it is."""
    global _blas_depth, _blas_limiter

    controller = _blas_controller() if active else None
    if controller is None:
        yield
        return
    # the limit is the process's: with scores in several threads, the first to enter
    # sets it and the last to leave restores the original (never one thread forever)
    with _blas_lock:
        if _blas_depth == 0:
            _blas_limiter = controller.limit(limits=1, user_api="blas")
        _blas_depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


_blas_lock = threading.Lock()
_blas_depth = 0
_blas_limiter: Any = None


@lru_cache(maxsize=1)
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - scikit-learn (and threadpoolctl) missing
        return None
    controller = ThreadpoolController()
    return controller if controller.select(user_api="blas").lib_controllers else None


def explain(model: Any, table: Table) -> dict[str, Any] | None:
    """The model's own ``explain()``; for a retrieval model without one (the k-NN
    baseline) its prediction and neighbours; None for a model with no memory."""
    if hasattr(model, "explain"):
        return model.explain(table)
    if hasattr(model, "neighbours") and hasattr(model, "memory_cat_"):
        idx, sim = model.neighbours(table)
        return {"prediction": model.predict(table), "neighbours": idx, "similarity": sim}
    return None


def memory_labels(model: Any) -> np.ndarray:
    """A retrieval memory's labels in log2 comments (de-standardised when stored so)."""
    if hasattr(model, "memory_labels"):
        return model.memory_labels()
    y = model.memory_y_.astype(np.float64)
    return y * model.y_std_ + model.y_mean_ if hasattr(model, "y_std_") else y


def load_scorer(settings: Any = None) -> PopularityScorer:
    """The predictor selected by ``settings.predictor`` (default: the shipped model).

    Raises :class:`MissingExtraError` when the model's embedder needs an extra that is
    not installed, so the pipeline can record "not scored" instead of failing.
    """
    predictor = getattr(settings, "predictor", None)
    data_dir = getattr(settings, "data_dir", None)
    return PopularityScorer(
        resolve_model_dir(predictor),
        data_dir=data_dir,
        category_match=getattr(settings, "category_match", "centroid"),
        min_category_size=getattr(settings, "min_category_size", 50),
        calibration_dir=getattr(settings, "out_dir", None),
    )
