"""The predictor contract (scikit-learn style) and saving without pickles.

``fit(table) -> self``, ``predict(table) -> array``; learned state lives in
attributes ending with ``_``; ``save(dir)`` writes ``config.json`` (the model name
and its hyper-parameters) and ``weights.npz`` (plain arrays, loaded with
``allow_pickle=False``); :func:`load_model` rebuilds any saved model from them.
"""

from __future__ import annotations

import importlib
import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmpopcorn.core.errors import DataError, UnknownBackendError
from llmpopcorn.predict.data import Table

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.npz"
FORMAT_VERSION = 1

#: the model families: name -> "module:class" under llmpopcorn.predict (imported on use),
#: simplest first; `popcorn predictor train` fits them all (a trained model is a folder,
#: e.g. predict/models/default, that --predictor selects)
MODELS: dict[str, str] = {
    "global-mean": ".baselines:GlobalMean",
    "category-mean": ".baselines:CategoryMean",
    "tfidf-ridge": ".baselines:TfidfRidge",
    "lex-ridge": ".stack:LexicalRidge",
    "knn": ".baselines:KnnLabels",
    "embed-ridge": ".baselines:EmbeddingRidge",
    "mmra": ".mmra:RetrievalAttention",
    "mmra-stack": ".stack:StackedRetrieval",
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
            "shapes": {key: list(value.shape) for key, value in arrays.items()},
            **(extra or {}),
        }
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        np.savez_compressed(out / WEIGHTS_FILE, **arrays)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Predictor:
        return load_model(directory)


#: what to do about a model folder that cannot be used
FIX_HINT = (
    "retrain it with `popcorn predictor train --data DIR --out MODEL_DIR`, or unset "
    "POPCORN_PREDICTOR (drop --model) to use the shipped model"
)


class _Inputs(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    text_fields: list[str] | None = None
    category: bool | None = None


class _Conformal(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    halfwidth: float | None = Field(None, ge=0)
    level: float | None = Field(None, gt=0, lt=1)


class _Train(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    rows: int | None = Field(None, ge=0)
    partition: dict[str, Any] | None = None


class _ConfigShape(BaseModel):
    """The types of the ``config.json`` keys this package reads (others pass): strict, so
    a list where a mapping belongs, a string for a number or a NaN half-width is caught
    when the folder is loaded, not as a stray error while scoring."""

    model_config = ConfigDict(extra="allow", strict=True)
    format: int | None = None
    model: str | None = None
    params: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    shapes: dict[str, list[int]] | None = None
    inputs: _Inputs | None = None
    conformal: _Conformal | None = None
    train: _Train | None = None


def _bad_model(directory: str | Path, problem: str) -> DataError:
    return DataError(f"the predictor model in {directory} is unusable: {problem}", FIX_HINT)


def read_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a model folder, checked for shape and types (a clear
    :class:`DataError` naming the folder, never a traceback)."""
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise DataError(
            f"no predictor model in {directory} ({CONFIG_FILE} is missing)",
            "train one with `popcorn predictor train --data DIR --out MODEL_DIR`",
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _bad_model(directory, f"{CONFIG_FILE} is not valid JSON ({exc})") from None
    except UnicodeDecodeError:
        raise _bad_model(directory, f"{CONFIG_FILE} is not UTF-8 text") from None
    except OSError as exc:
        raise _bad_model(directory, f"{CONFIG_FILE} cannot be read ({exc.strerror})") from None
    if not isinstance(config, dict):
        raise _bad_model(
            directory, f"{CONFIG_FILE} holds a {type(config).__name__}, not a JSON object"
        )
    try:
        _ConfigShape.model_validate(config)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        got = type(err.get("input")).__name__
        wanted = {"model_type": "should be a JSON object", "dict_type": "should be a JSON object"}
        problem = wanted.get(err["type"], err["msg"].lower())
        problem = f"{CONFIG_FILE} key '{where}' {problem} (got a {got})"
        raise _bad_model(directory, problem) from None
    bad = _non_finite(config.get("state"))
    if bad:
        raise _bad_model(directory, f"{CONFIG_FILE} state '{bad}' is not a finite number")
    return config


def _non_finite(value: Any, where: str = "") -> str | None:
    """The first key path under ``value`` holding NaN or an infinity, else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where or "."
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def _check_finite(directory: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Every floating-point weight is finite: a NaN weight turns every score into NaN
    (it ended as 'cannot convert float NaN to integer' deep in scoring)."""
    for key, array in arrays.items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            count = int(array.size - np.isfinite(array).sum())
            raise _bad_model(
                directory, f"{WEIGHTS_FILE} array '{key}' holds {count} NaN or infinite values"
            )


def _read_weights(directory: str | Path) -> dict[str, np.ndarray]:
    """The arrays of ``weights.npz``; a missing, empty, truncated or foreign file (or one
    holding pickled objects, which are never loaded) is a :class:`DataError`."""
    import zipfile
    import zlib

    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise _bad_model(directory, f"{WEIGHTS_FILE} is missing")
    if path.stat().st_size == 0:
        raise _bad_model(directory, f"{WEIGHTS_FILE} is empty (0 bytes)")
    if not zipfile.is_zipfile(path):
        raise _bad_model(
            directory, f"{WEIGHTS_FILE} is not a NumPy .npz archive (truncated or overwritten?)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:
        problem = (
            "it holds Python objects, which are never unpickled"
            if "pickle" in str(exc)
            else f"an array is malformed ({exc})"
        )
        raise _bad_model(directory, f"{WEIGHTS_FILE}: {problem}") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise _bad_model(directory, f"{WEIGHTS_FILE} is damaged ({exc})") from None


def load_model(directory: str | Path) -> Predictor:
    """Rebuild a saved model (any of :data:`MODELS`) from its directory.

    Every way a folder can be broken (config of the wrong shape or types, unknown
    model, parameters the model does not take, an unreadable weights file, arrays whose
    shapes contradict the config's ``shapes``) raises a :class:`DataError` that names
    the folder and the fix.
    """
    config = read_config(directory)
    if config.get("format") != FORMAT_VERSION:
        raise DataError(
            f"{directory}: model format {config.get('format')} is not supported",
            f"retrain with this version (format {FORMAT_VERSION})",
        )
    name = config.get("model")
    if name not in MODELS:
        raise _bad_model(
            directory, f"unknown model {name!r} in {CONFIG_FILE} (known: {', '.join(MODELS)})"
        )
    try:
        model = model_class(name)(**config.get("params", {}))
    except (TypeError, ValueError) as exc:
        raise _bad_model(directory, f"{CONFIG_FILE} 'params' do not fit {name}: {exc}") from None
    arrays = _read_weights(directory)
    _check_finite(directory, arrays)
    shapes = config.get("shapes")
    if isinstance(shapes, dict):
        for key, shape in shapes.items():
            if key not in arrays:
                raise _bad_model(directory, f"{WEIGHTS_FILE} lacks the array '{key}'")
            if list(arrays[key].shape) != list(shape):
                raise _bad_model(
                    directory,
                    f"array '{key}' has shape {list(arrays[key].shape)}, "
                    f"{CONFIG_FILE} says {list(shape)} (weights from another model?)",
                )
    try:
        model.set_state(config.get("state", {}), arrays)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise _bad_model(directory, f"its state does not fit {name}: {exc}") from None
    return model
