"""MMRA's regression metrics: nMSE, MAE and Spearman rank correlation (SRC).

Each is computed two ways, as the issue asks:

* **global**: over the whole evaluation set at once;
* **batched**: as MMRA's test script does, over consecutive batches of 256 items (in
  the given order) and then averaged with equal weight per batch. The last, shorter
  batch counts as one batch like the others.

nMSE divides the mean squared error by the population variance of the true labels
(of the same set, or of the same batch in the batched form).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BATCH_SIZE = 256


def _arrays(y_true: Sequence[float], y_pred: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} != {p.size}")
    if t.size == 0:
        raise ValueError("cannot compute metrics on an empty set")
    return t, p


def nmse(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """mean((ŷ − y)²) / Var(y), with the population variance (ddof = 0)."""
    t, p = _arrays(y_true, y_pred)
    var = float(np.var(t))
    if var == 0.0:
        return math.nan
    return float(np.mean((p - t) ** 2) / var)


def mae(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    t, p = _arrays(y_true, y_pred)
    return float(np.mean(np.abs(p - t)))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    from scipy.stats import rankdata

    return rankdata(x, method="average")


def src(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); NaN if constant."""
    t, p = _arrays(y_true, y_pred)
    rt, rp = _ranks(t), _ranks(p)
    st, sp = rt.std(), rp.std()
    if st == 0.0 or sp == 0.0:
        return math.nan
    return float(np.mean((rt - rt.mean()) * (rp - rp.mean())) / (st * sp))


def batched(metric, y_true, y_pred, batch_size: int = BATCH_SIZE) -> float:
    """Mean of ``metric`` over consecutive batches (NaN batches are skipped)."""
    t, p = _arrays(y_true, y_pred)
    values = [
        metric(t[i : i + batch_size], p[i : i + batch_size]) for i in range(0, t.size, batch_size)
    ]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def regression_report(
    y_true: Sequence[float], y_pred: Sequence[float], batch_size: int = BATCH_SIZE
) -> dict[str, float]:
    """All metrics, global and batched, as a flat JSON-safe dict."""
    t, p = _arrays(y_true, y_pred)
    return {
        "n": int(t.size),
        "nmse": nmse(t, p),
        "mae": mae(t, p),
        "src": src(t, p),
        "nmse_batched": batched(nmse, t, p, batch_size),
        "mae_batched": batched(mae, t, p, batch_size),
        "src_batched": batched(src, t, p, batch_size),
    }
