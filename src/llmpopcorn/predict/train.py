"""Train and evaluate every predictor on one seeded 80/10/10 split; save the chosen one.

The default is chosen by *validation* nMSE; the test split is only reported. The
saved model directory holds ``config.json`` (hyper-parameters, the conformal
interval, training-data hash, code version, metrics) and ``weights.npz``; the
output directory also gets ``metrics.json`` with every model's numbers.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import math
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from llmpopcorn import __version__
from llmpopcorn.core.errors import ConfigError
from llmpopcorn.predict.base import MODELS, Predictor, model_class
from llmpopcorn.predict.conformal import conformal_halfwidth, coverage, interval
from llmpopcorn.predict.data import Table, split_indices
from llmpopcorn.predict.metrics import regression_report

log = logging.getLogger(__name__)

#: every model family, in the order of the metrics table (simplest first)
DEFAULT_MODELS = tuple(MODELS)
INTERVAL_LEVEL = 0.8
MAX_MODEL_BYTES = 25 * 1024 * 1024

Progress = Callable[[str, int, int], None]


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, NumPy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def calibration_halves(n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions in the held-out test split (already in random order) of its two halves:
    the first calibrates the conformal interval and is used for nothing else (not for
    fitting, early stopping, the blend or choosing a model); coverage is measured on the
    second. Calibrating on the validation rows that also chose the epoch and the blend
    gave 0.788 test coverage for 0.80 (the judge)."""
    half = n_test // 2
    return np.arange(half), np.arange(half, n_test)


def conformal_report(
    valid_labels: np.ndarray,
    valid_pred: np.ndarray,
    test_labels: np.ndarray,
    test_pred: np.ndarray,
    level: float,
) -> dict[str, Any]:
    """The split-conformal interval calibrated on the calibration half of the test
    split (:func:`calibration_halves`), its coverage on the other half and on
    validation. With fewer than 2 held-out rows it falls back to validation, and says so."""
    cal, held = calibration_halves(len(test_labels))
    if len(cal) and len(held):
        half = conformal_halfwidth(test_labels[cal], test_pred[cal], level)
        where = "calibration split: half of the held-out test rows, used for nothing else"
        cal_rows = len(cal)
    else:
        half = conformal_halfwidth(valid_labels, valid_pred, level)
        where = "validation split (too few held-out rows for a calibration split)"
        cal_rows, held = len(valid_labels), np.arange(len(test_labels))
    return {
        "level": level,
        "halfwidth": half,
        "calibrated_on": where,
        "calibration_rows": int(cal_rows),
        "coverage_rows": int(len(held)),
        "valid_coverage": coverage(valid_labels, *interval(valid_pred, half)),
        "test_coverage": coverage(test_labels[held], *interval(test_pred[held], half)),
    }


def evaluate_model(model: Predictor, valid: Table, test: Table, level: float) -> dict[str, Any]:
    """Validation and test metrics (test: every held-out row; calibrating changes no
    prediction), plus the conformal interval of :func:`conformal_report`."""
    pv, pt = model.predict(valid), model.predict(test)
    return {
        "valid": regression_report(valid.labels, pv),
        "test": regression_report(test.labels, pt),
        "conformal": conformal_report(valid.labels, pv, test.labels, pt, level),
    }


def train_all(
    table: Table,
    *,
    seed: int = 42,
    models: Sequence[str] = DEFAULT_MODELS,
    params: dict[str, dict[str, Any]] | None = None,
    level: float = INTERVAL_LEVEL,
    progress: Progress | None = None,
) -> tuple[dict[str, Predictor], dict[str, Any]]:
    """Fit each model on the training split; return the fitted models and the metrics."""
    for name in models:
        model_class(name)  # unknown names fail before any work
    train_idx, valid_idx, test_idx = split_indices(len(table), seed)
    train, valid, test = table.take(train_idx), table.take(valid_idx), table.take(test_idx)
    fitted: dict[str, Predictor] = {}
    results: dict[str, Any] = {}
    for name in models:
        kwargs = dict((params or {}).get(name, {}))
        cls = model_class(name)
        if "seed" in inspect.signature(cls).parameters:
            kwargs.setdefault("seed", seed)
        model = cls(**kwargs)

        last_total = [1]

        def epoch_progress(
            done: int, total: int, history: Any, _name: str = name, _last: list = last_total
        ) -> None:
            _last[0] = total
            if progress:
                progress(_name, done, total)

        started = time.perf_counter()
        model.fit(train, valid, progress=epoch_progress)
        fit_s = time.perf_counter() - started
        results[name] = {**evaluate_model(model, valid, test, level), "fit_seconds": fit_s}
        if hasattr(model, "history_"):
            results[name]["best_epoch"] = model.history_.get("best_epoch")
        fitted[name] = model
        log.info("%s: valid %s", name, results[name]["valid"])
        if progress:  # early stopping may end before the last epoch: close the bar
            progress(name, last_total[0], last_total[0])
    metrics = {
        "seed": seed,
        "split": {"train": len(train), "valid": len(valid), "test": len(test)},
        "selection": "lowest validation nMSE",
        "models": results,
    }
    return fitted, metrics


def choose(metrics: dict[str, Any]) -> str:
    """The model with the lowest validation nMSE (never looks at test)."""
    scored = {
        name: r["valid"]["nmse"]
        for name, r in metrics["models"].items()
        if r["valid"]["nmse"] is not None and math.isfinite(r["valid"]["nmse"])
    }
    if not scored:
        raise ConfigError("no model produced finite validation metrics", "check the data")
    return min(scored, key=scored.get)


def save_trained(
    model: Predictor,
    out: str | Path,
    metrics: dict[str, Any],
    *,
    data_sha256: str,
    rows: int,
    part: str = "all",
    inputs: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` with its interval, provenance and metrics; check the size limit.

    ``part``: the corpus part it was trained on (:mod:`llmpopcorn.corpus.partition`);
    ``inputs``: what it learned from, ``{"text_fields": [...], "category": True}``."""
    from llmpopcorn.corpus.partition import describe

    result = metrics["models"][model.name]
    extra = {
        "conformal": {
            k: result["conformal"][k]
            for k in (
                "level",
                "halfwidth",
                "calibrated_on",
                "calibration_rows",
                "coverage_rows",
                "test_coverage",
            )
        },
        "train": {
            "data_sha256": data_sha256,
            "rows": rows,
            "seed": metrics["seed"],
            "split": metrics["split"],
            "partition": describe(part),
            "code_version": code_version(),
            "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "metrics": {"valid": result["valid"], "test": result["test"]},
    }
    if inputs is not None:
        extra["inputs"] = inputs
    path = model.save(out, extra=json_safe(extra))
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    if size > MAX_MODEL_BYTES:
        log.warning("model directory %s is %.1f MB (> 25 MB)", path, size / 2**20)
    return path


def write_metrics(metrics: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(metrics), indent=2, sort_keys=True) + "\n")
    return path


def metrics_table(metrics: dict[str, Any], split: str = "test") -> str:
    """A Markdown table of every model's metrics on ``split``."""
    head = (
        f"| model ({split}) | nMSE | MAE | SRC | nMSE@256 | MAE@256 | SRC@256 | "
        f"{int(100 * INTERVAL_LEVEL)}% cover | fit s |"
    )
    lines = [head, "|" + "---|" * 9]

    def fmt(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"

    order = {name: i for i, name in enumerate(DEFAULT_MODELS)}
    for name in sorted(metrics["models"], key=lambda n: (order.get(n, len(order)), n)):
        r = metrics["models"][name]
        m = r[split]
        cover = r["conformal"]["test_coverage" if split == "test" else "valid_coverage"]
        lines.append(
            f"| {name} | {fmt(m['nmse'])} | {fmt(m['mae'])} | {fmt(m['src'])} | "
            f"{fmt(m['nmse_batched'])} | {fmt(m['mae_batched'])} | {fmt(m['src_batched'])} | "
            f"{fmt(cover)} | {r.get('fit_seconds', 0):.1f} |"
        )
    return "\n".join(lines)


__all__ = ["MODELS", "choose", "metrics_table", "save_trained", "train_all", "write_metrics"]


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block on ``threads`` torch CPU threads (no-op for None or without torch).

    Measured on the shared 2-core sandbox under load: MiniLM embeds ~22 texts/s on one
    thread and ~8 texts/s on two (the thread pool waits on the other processes)."""
    if not threads or importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def embedders_for(models: Sequence[str]) -> set[str]:
    """The embedders the named models read (from their default parameters)."""
    names = set()
    for name in models:
        param = inspect.signature(model_class(name).__init__).parameters.get("embedder")
        if param is not None and param.default is not inspect.Parameter.empty:
            names.add(param.default)
    return names


def train_and_save(
    data: str | Path,
    out: str | Path,
    *,
    model: str = "auto",
    seed: int = 42,
    models: Sequence[str] = DEFAULT_MODELS,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
    part: str = "all",
) -> tuple[Path, dict[str, Any]]:
    """Load the corpus, embed it (cached), train every model, save the chosen one.

    ``model="auto"`` saves the model with the best validation nMSE; a model name saves
    that one. ``metrics.json`` beside the weights holds every model's numbers.

    ``part`` (``"all"``, ``"judge"``, ``"reference"``) trains on that part of the corpus
    only (:func:`llmpopcorn.corpus.partition.in_part`, applied before the 80/10/10 split). The
    row texts are built from the text fields that carry information in this corpus
    (:func:`~llmpopcorn.predict.data.informative_fields`); ``config.json`` records them
    under ``inputs`` and the part under ``train.partition``.
    """
    from llmpopcorn.corpus.partition import check_part, describe, in_part
    from llmpopcorn.predict.data import informative_fields, load_table
    from llmpopcorn.predict.embed import attach_embeddings
    from llmpopcorn.predict.scorer import check_embedder_available

    check_part(part)

    models = list(models)
    if model != "auto" and model not in models:
        models.append(model)
    for name in embedders_for(models):
        check_embedder_available(name, "training")
    table, corpus = load_table(data, text_fields="informative")
    inputs = {"text_fields": informative_fields(corpus), "category": True}
    if progress:
        progress("embed", 0, 1)
    started = time.perf_counter()
    with torch_threads(threads):
        if table.texts == corpus.texts:  # the cached corpus embeddings fit these texts
            attach_embeddings(table, corpus, embedders_for(models), cache_dir)
        else:
            for name in sorted(embedders_for(models)):
                table.embeddings(name)
    embed_s = time.perf_counter() - started
    if progress:
        progress("embed", 1, 1)
    corpus_rows = len(table)
    mask = in_part(table.ids, part)
    table = table.take(np.flatnonzero(mask))
    if len(table) < 3:
        raise ConfigError(
            f"the {part} part of the corpus holds only {len(table)} row(s)",
            "train on --part all or use a bigger table",
        )
    fitted, metrics = train_all(table, seed=seed, models=models, progress=progress)
    chosen = choose(metrics) if model == "auto" else model
    metrics["default"] = chosen
    metrics["embed_seconds"] = embed_s
    metrics["data_sha256"] = corpus.sha256
    metrics["code_version"] = code_version()
    metrics["partition"] = {**describe(part), "rows": len(table), "corpus_rows": corpus_rows}
    metrics["inputs"] = inputs
    path = save_trained(
        fitted[chosen],
        out,
        metrics,
        data_sha256=corpus.sha256,
        rows=len(table),
        part=part,
        inputs=inputs,
    )
    write_metrics(metrics, Path(out) / "metrics.json")
    return path, metrics
