"""Score generated ideas with a saved predictor: value, interval, percentile, why.

The shipped default model lives in ``llmpopcorn/models/default`` (weights and a
retrieval memory of embeddings, labels, ids and categories; no corpus text).
Neighbour titles are looked up in the corpus when ``POPCORN_DATA`` / ``--data`` is
set; without it the explanation still has ids, comment counts and similarities.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, InputError, MissingExtraError
from ..types import Idea, Reference, Score
from .base import load_model, read_config
from .data import Table
from .embed import EMBEDDER_NEEDS
from .mmra import UNKNOWN

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
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


class PopularityScorer:
    """Wraps a saved model; ``score(idea)`` returns a :class:`~llmpopcorn.types.Score`."""

    kind = "predictor"
    description = "shipped MMRA-style predictor (or POPCORN_PREDICTOR=DIR): log2 comments"

    @classmethod
    def from_settings(cls, settings: Any) -> PopularityScorer:
        return load_scorer(settings)

    @classmethod
    def availability(cls, settings: Any = None) -> Any:
        """Whether the selected model exists and its embedder's extra is installed."""
        from ..backends.base import Availability

        try:
            path = resolve_model_dir(getattr(settings, "predictor", None))
            embedder = read_config(path).get("params", {}).get("embedder")
            check_embedder_available(embedder)
        except (DataError, MissingExtraError) as exc:
            return Availability(False, f"{exc.message}: {exc.hint}")
        return Availability(True)

    def __init__(self, model_dir: str | Path, data_dir: str | Path | None = None):
        self.model_dir = Path(model_dir)
        self.config = read_config(self.model_dir)
        check_embedder_available(self.config.get("params", {}).get("embedder"))
        self.model = load_model(self.model_dir)
        self.data_dir = data_dir
        conformal = self.config.get("conformal") or {}
        self.halfwidth: float | None = conformal.get("halfwidth")
        self.level: float | None = conformal.get("level")
        self.name = f"{self.model.name}@{self.model_dir.name}"
        self._titles: dict[str, str] | None = None

    def _corpus_titles(self) -> dict[str, str]:
        if self._titles is None:
            self._titles = {}
            if self.data_dir:
                from ..corpus import load_corpus

                try:
                    frame = load_corpus(self.data_dir).frame
                    self._titles = dict(zip(frame["video_id"], frame["title_en"], strict=True))
                except DataError as exc:
                    log.warning("neighbour titles unavailable: %s", exc)
        return self._titles

    def labels(self) -> np.ndarray:
        """The memory's labels in log2 comments."""
        m = self.model
        y = m.memory_y_.astype(np.float64)
        return y * m.y_std_ + m.y_mean_ if hasattr(m, "y_std_") else y

    def score_table(self, table: Table) -> list[Score]:
        """Score rows; rows with an empty category get the one their neighbours vote for."""
        m = self.model
        started = time.perf_counter()
        has_memory = hasattr(m, "memory_cat_") and hasattr(m, "neighbours")
        idx = sim = None
        inferred = np.zeros(len(table), dtype=bool)
        if has_memory:
            idx, sim = m.neighbours(table)
            cats = np.array(table.categories, dtype=object)
            for row in range(len(table)):
                if str(cats[row]) in ("", UNKNOWN):
                    weights = np.exp((sim[row] - sim[row].max()) / 0.05)
                    votes = np.bincount(
                        m.memory_cat_[idx[row]], weights=weights, minlength=len(m.categories_)
                    )
                    cats[row] = m.categories_[int(votes.argmax())]
                    inferred[row] = True
            table.categories = cats
        attention = None
        if hasattr(m, "forward"):
            found = (idx, sim) if idx is not None else None
            standardised, attention = m.forward(m._inputs(table, neighbours=found))
            pred = standardised * m.y_std_ + m.y_mean_
        else:
            pred = m.predict(table)
        labels = self.labels() if has_memory else None
        seconds = (time.perf_counter() - started) / max(len(table), 1)
        scores = []
        for row, value in enumerate(pred):
            value = float(value)
            cat = str(table.categories[row])
            percentile = None
            neighbours: list[Reference] = []
            extra: dict[str, Any] = {
                "model_dir": str(self.model_dir),
                "category_inferred": bool(inferred[row]),
                "seconds": round(seconds, 4),
                "train_sha256": self.config.get("train", {}).get("data_sha256"),
            }
            if labels is not None:
                same = labels[m.categories_[m.memory_cat_] == cat]
                if same.size:
                    percentile = round(100.0 * float(np.mean(same <= value)), 1)
                order = np.arange(idx.shape[1])
                if attention is not None:
                    extra["attention"] = [round(float(a), 4) for a in attention[row]]
                titles = self._corpus_titles()
                for j in order[:N_EXPLAIN]:
                    mem = int(idx[row, j])
                    vid = str(m.memory_ids_[mem])
                    neighbours.append(
                        Reference(
                            video_id=vid,
                            title=titles.get(vid, ""),
                            category=str(m.categories_[m.memory_cat_[mem]]),
                            comment_count=int(round(2 ** float(labels[mem]))),
                            similarity=round(float(sim[row, j]), 4),
                        )
                    )
            interval = None
            if self.halfwidth is not None:
                interval = (round(value - self.halfwidth, 4), round(value + self.halfwidth, 4))
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
        self, idea: Idea, *, query: str | None = None, clip_path: str | Path | None = None
    ) -> Score:
        """Score one idea from its text (title, cover prompt, video prompt) and, for a
        model trained with visual features, from its rendered clip."""
        return self.score_text(
            idea.title, idea.cover_prompt, idea.video_prompt, query=query, clip_path=clip_path
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
        """Score raw text fields; an empty ``category`` is inferred from the neighbours."""
        from ..corpus import item_text

        if not title.strip():
            raise InputError("the title is empty", "pass a non-empty --title")
        table = Table(
            ids=["idea"],
            texts=[item_text(title, cover_prompt, video_prompt)],
            categories=[category],
            titles=[title],
        )
        visual_dim = int(getattr(self.model, "visual_dim", 0) or 0)
        if visual_dim:
            if clip_path is None:
                raise InputError(
                    "this predictor also reads the rendered clip, and there is none",
                    "render a clip first, or use a text-only predictor",
                )
            from .visual import get_extractor, read_frames

            extractor = get_extractor(self.model.visual_extractor, visual_dim)
            table.visual = extractor.extract(read_frames(clip_path))[None, :]
        result = self.score_table(table)[0]
        if query:
            result.extra["query"] = query
        return result


def load_scorer(settings: Any = None) -> PopularityScorer:
    """The predictor selected by ``settings.predictor`` (default: the shipped model).

    Raises :class:`MissingExtraError` when the model's embedder needs an extra that is
    not installed, so the pipeline can record "not scored" instead of failing.
    """
    predictor = getattr(settings, "predictor", None)
    data_dir = getattr(settings, "data_dir", None)
    return PopularityScorer(resolve_model_dir(predictor), data_dir=data_dir)
