"""Evaluate a saved model on any labelled CSV with the corpus columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmpopcorn.core.errors import DataError
from llmpopcorn.predict.base import load_model, read_config
from llmpopcorn.predict.conformal import coverage, interval
from llmpopcorn.predict.data import load_table
from llmpopcorn.predict.metrics import regression_report
from llmpopcorn.predict.scorer import check_embedder_available, resolve_model_dir


def evaluate_csv(
    model_dir: str | Path | None, data: str | Path, *, include_seen: bool = False
) -> dict[str, Any]:
    """Metrics of the model on ``data``.

    Rows whose ``video_id`` is in the model's retrieval memory were trained on; they
    are left out unless ``include_seen`` (and even then never retrieve themselves).
    """
    path = resolve_model_dir(model_dir)
    config = read_config(path)
    check_embedder_available(config.get("params", {}).get("embedder"), "evaluation")
    model = load_model(path)
    # the row text from exactly the fields the model learned from (older models: all)
    text_fields = (config.get("inputs") or {}).get("text_fields")
    table, corpus = load_table(data, text_fields=text_fields)
    seen = np.zeros(len(table), dtype=bool)
    memory_ids = getattr(model, "memory_ids_", None)
    if memory_ids is not None:
        seen = np.isin(table.ids.astype(str), memory_ids.astype(str))
    n_seen = int(seen.sum())
    if not include_seen and n_seen:
        table = table.take(np.flatnonzero(~seen))
    if len(table) == 0:
        raise DataError(
            f"every row of {data} was in the model's training data",
            "evaluate on rows the model has not seen, or pass --include-seen",
        )
    pred = model.predict(table)
    report: dict[str, Any] = {
        **regression_report(table.labels, pred),
        "model_dir": str(path),
        "model": model.name,
        "data_sha256": corpus.sha256,
        "rows_in_training_data": n_seen,
        "rows_in_training_data_used": n_seen if include_seen else 0,
        "text_fields": text_fields,
    }
    conformal = config.get("conformal") or {}
    if conformal.get("halfwidth") is not None:
        lo, hi = interval(pred, conformal["halfwidth"])
        report["interval_level"] = conformal["level"]
        report["interval_coverage"] = coverage(table.labels, lo, hi)
    else:
        report["interval_level"] = report["interval_coverage"] = None
    return report
