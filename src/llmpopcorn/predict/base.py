"""The predictor contract (scikit-learn style) and saving without pickles.

``fit(table) -> self``, ``predict(table) -> array``; learned state lives in
attributes ending with ``_``; ``save(dir)`` writes ``config.json`` (the model name
and its hyper-parameters) and ``weights.npz`` (plain arrays, loaded with
``allow_pickle=False``); :func:`load_model` rebuilds any saved model from them.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import DataError, UnknownBackendError
from .data import Table

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.npz"
FORMAT_VERSION = 1

#: model name -> "module:class" under llmpopcorn.predict (imported on use)
MODELS: dict[str, str] = {
    "global-mean": ".baselines:GlobalMean",
    "category-mean": ".baselines:CategoryMean",
    "tfidf-ridge": ".baselines:TfidfRidge",
    "knn": ".baselines:KnnLabels",
    "embed-ridge": ".baselines:EmbeddingRidge",
    "mmra": ".mmra:RetrievalAttention",
}


def model_class(name: str) -> type[Predictor]:
    if name not in MODELS:
        raise UnknownBackendError(
            f"unknown predictor model '{name}'", f"available models: {', '.join(MODELS)}"
        )
    module, _, attr = MODELS[name].partition(":")
    return getattr(importlib.import_module(module, __package__), attr)


class Predictor(ABC):
    """A popularity regressor on :class:`Table` rows (label: log2 comment count)."""

    name: ClassVar[str] = ""
    #: the embedder this model reads (``None``: it uses no text embedding)
    embedder: str | None = None

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters (JSON-safe); the constructor accepts them back."""
        return {}

    @abstractmethod
    def fit(self, table: Table, valid: Table | None = None, progress: Any = None) -> Predictor:
        """Learn from ``table``; ``valid`` may be used for early stopping or tuning."""

    @abstractmethod
    def predict(self, table: Table) -> np.ndarray:
        """Predicted log2(comment_count), one per row."""

    # -- state ----------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Learned state as (JSON-safe values, arrays); the default reads ``*_`` attrs."""
        meta: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for key, value in vars(self).items():
            if not key.endswith("_") or key.startswith("_"):
                continue
            if isinstance(value, np.ndarray):
                arrays[key] = value
            else:
                meta[key] = value
        return meta, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        for key, value in {**meta, **arrays}.items():
            setattr(self, key, value)

    def check_fitted(self) -> None:
        if not any(k.endswith("_") and not k.startswith("_") for k in vars(self)):
            raise DataError(f"the {self.name} model is not fitted", "call fit() or load() first")

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` + ``weights.npz`` into ``directory``."""
        self.check_fitted()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta, arrays = self.state()
        for key, value in arrays.items():
            if value.dtype == object:
                arrays[key] = value.astype(str)
        config = {
            "format": FORMAT_VERSION,
            "model": self.name,
            "params": self.get_params(),
            "state": meta,
            **(extra or {}),
        }
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        np.savez_compressed(out / WEIGHTS_FILE, **arrays)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Predictor:
        return load_model(directory)


def read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise DataError(
            f"no predictor model in {directory} ({CONFIG_FILE} is missing)",
            "train one with `popcorn predictor train --data DIR --out MODEL_DIR`",
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}", "retrain the model") from None


def load_model(directory: str | Path) -> Predictor:
    """Rebuild a saved model (any of :data:`MODELS`) from its directory."""
    config = read_config(directory)
    if config.get("format") != FORMAT_VERSION:
        raise DataError(
            f"{directory}: model format {config.get('format')} is not supported",
            f"retrain with this version (format {FORMAT_VERSION})",
        )
    model = model_class(config["model"])(**config.get("params", {}))
    with np.load(Path(directory) / WEIGHTS_FILE, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    model.set_state(config.get("state", {}), arrays)
    return model
