"""Split-conformal prediction intervals.

Calibrate on held-out residuals (the validation split, never the training rows):
with n absolute residuals and level 1 - alpha, the half-width is the
ceil((n + 1)(1 - alpha))-th smallest of them (the largest when that exceeds n),
which covers a new exchangeable row with probability at least 1 - alpha.
"""

from __future__ import annotations

import math

import numpy as np


def conformal_halfwidth(y_true: np.ndarray, y_pred: np.ndarray, level: float = 0.8) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    residuals = np.abs(np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64))
    n = residuals.size
    if n == 0:
        raise ValueError("cannot calibrate an interval on zero rows")
    rank = math.ceil((n + 1) * level)  # 1-based rank of the residual to use
    return float(np.sort(residuals)[min(rank, n) - 1])


def interval(y_pred: np.ndarray, halfwidth: float) -> tuple[np.ndarray, np.ndarray]:
    y_pred = np.asarray(y_pred, np.float64)
    return y_pred - halfwidth, y_pred + halfwidth


def coverage(y_true: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    y = np.asarray(y_true, np.float64)
    return float(np.mean((y >= lower) & (y <= upper)))
