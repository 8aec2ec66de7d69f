"""Recalibrate a saved model's conformal interval without retraining it.

A model trained before the calibration split existed had its interval calibrated on the
validation rows that also chose its epoch and its blend. This rebuilds the model's own
split from ``config.json`` (corpus hash, part, seed), checks that it reproduces the
recorded test metrics (so the rows are the same), and calibrates the interval on the
calibration half of the held-out test rows (:func:`llmpopcorn.predict.train.conformal_report`);
the weights, and so every prediction, stay as they are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from llmpopcorn.core.errors import DataError
from llmpopcorn.predict.base import CONFIG_FILE, load_model, read_config

#: the recorded and the recomputed test nMSE must agree this closely: the same rows
#: (another split of the judge part moves it by 0.01 and more), scored from embeddings
#: that may differ in the last bits (ONNX against torch MiniLM: 1.2e-5 on the judge)
SAME_SPLIT_TOLERANCE = 1e-3


def recalibrate(
    model_dir: str | Path,
    data: str | Path,
    *,
    cache_dir: str | Path | None = None,
    write: bool = False,
) -> dict[str, Any]:
    """The model's interval recalibrated on its calibration split: the old and the new
    half-width and coverage. ``write``: save the new interval into ``config.json`` (and
    ``metrics.json`` when it is there)."""
    from llmpopcorn.corpus.partition import in_part
    from llmpopcorn.predict.data import load_table, split_indices
    from llmpopcorn.predict.embed import attach_embeddings
    from llmpopcorn.predict.metrics import regression_report
    from llmpopcorn.predict.train import INTERVAL_LEVEL, conformal_report, json_safe

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    train = config.get("train") or {}
    table, corpus = load_table(data, text_fields="informative")
    if train.get("data_sha256") and corpus.sha256 != train["data_sha256"]:
        raise DataError(
            f"{model_dir.name} was trained on another corpus file (sha256 "
            f"{train['data_sha256'][:12]}..., this one {corpus.sha256[:12]}...)",
            "point --data at the corpus the model was trained on",
        )
    embedder = (config.get("params") or {}).get("embedder")
    if embedder and table.texts == corpus.texts:
        attach_embeddings(table, corpus, {embedder}, cache_dir)
    part = str((train.get("partition") or {}).get("part", "all"))
    table = table.take(np.flatnonzero(in_part(table.ids, part)))
    _, valid_idx, test_idx = split_indices(len(table), int(train.get("seed", 42)))
    valid, test = table.take(valid_idx), table.take(test_idx)
    model = load_model(model_dir)
    pv, pt = model.predict(valid), model.predict(test)
    recorded = (config.get("metrics") or {}).get("test") or {}
    again = regression_report(test.labels, pt)["nmse"]
    same = recorded.get("n") in (None, len(test.labels)) and math.isclose(
        again, recorded.get("nmse", again), abs_tol=SAME_SPLIT_TOLERANCE
    )
    if not same:
        raise DataError(
            f"{model_dir.name}: its test split does not reproduce ({len(test.labels)} rows, "
            f"nMSE {again:.6f}; recorded: {recorded.get('n')} rows, {recorded.get('nmse')})",
            "use the corpus, code and embedder cache it was trained with, or retrain it",
        )
    old = dict(config.get("conformal") or {})
    level = float(old.get("level") or INTERVAL_LEVEL)
    new = json_safe(conformal_report(valid.labels, pv, test.labels, pt, level))
    old_cover = None
    if old.get("halfwidth") is not None:  # the old interval on the same coverage rows
        from llmpopcorn.predict.conformal import coverage, interval
        from llmpopcorn.predict.train import calibration_halves

        _, held = calibration_halves(len(test.labels))
        old_cover = coverage(test.labels[held], *interval(pt[held], old["halfwidth"]))
    if write:
        _write(model_dir, config, new)
    return {
        "model_dir": str(model_dir),
        "part": part,
        "rows": len(table),
        "test_nmse": again,
        "before": {**old, "coverage_on_the_same_rows": old_cover},
        "after": new,
        "written": write,
    }


def _write(model_dir: Path, config: dict[str, Any], new: dict[str, Any]) -> None:
    keep = ("level", "halfwidth", "calibrated_on", "calibration_rows", "coverage_rows",
            "test_coverage")  # fmt: skip
    config["conformal"] = {k: new[k] for k in keep}
    path = model_dir / CONFIG_FILE
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    metrics = model_dir / "metrics.json"
    if metrics.exists():
        saved = json.loads(metrics.read_text())
        name = config.get("model")
        if name in saved.get("models", {}):
            saved["models"][name]["conformal"] = new
            saved["conformal_note"] = (
                f"{name}'s interval recalibrated on the calibration split (popcorn predictor "
                "intervals); the other models' entries are calibrated on validation"
            )
            metrics.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
