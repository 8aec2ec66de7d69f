"""Calibrating the judge to one creator's real posts.

The judge learned what MicroLens videos get; a creator's own audience is bigger or
smaller, and their niche may be over- or under-rated by it. ``popcorn feedback`` records
what posted videos really got; this module fits a correction of the judge's prediction
``p`` (log2 comments) to those outcomes ``y``:

    calibrated(p) = p + offset + (slope - 1) * (p - center)

Method (``shrunk-linear``): the posterior mean of a linear correction under a Gaussian
prior centred on *no correction*, i.e. ridge regression of the residuals ``y - p`` on
the centred prediction, shrunk toward the identity:

    offset    = sum(y - p) / (n + k)
    slope - 1 = sum((y - p)(p - center)) / (sum((p - center)^2) + k * v)

``k`` (``prior_posts``, default 5) counts how many posts' worth of belief the prior
holds: with 1 post the offset moves 1/6 of the way to that post's error, with 20 posts
80 %. ``v`` (:data:`PREDICTION_VARIANCE`) is the typical spread of the judge's
predictions, so the slope is shrunk as if ``k`` posts of typical spread agreed with the
judge. Why this and not isotonic regression or a free linear fit: a creator has a handful
to a few dozen posts, far too few for a curve, and a free fit on 3 posts swings wildly;
the shrunk fit is exact at 0 posts (no feedback: exactly today's score), moves smoothly
as posts arrive, keeps the judge's order (the slope is kept >= 0) and has a closed form
that leave-one-out can refit n times for free.

How far predictions were off is measured by leave-one-out (:func:`leave_one_out`):
every post is predicted by a calibration fitted on the other posts only, so the "after"
numbers are what a new post can expect, not a fit to itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from llmpopcorn.core.cache import atomic_write

METHOD = "shrunk-linear"
PRIOR_POSTS = 5.0
#: variance of the shipped judges' predictions over the corpus (log2 comments squared;
#: measured on the 16,740 MicroLens videos: default 0.83, judge 0.73, reward 0.75,
#: evaluation 0.65; the labels' own variance is 2.91)
PREDICTION_VARIANCE = 0.75
FILE_NAME = "calibration.json"
FORMAT = 1


class Calibration(BaseModel):
    """A fitted correction of one predictor's log2 predictions (see the module doc)."""

    predictor: str
    posts: int = Field(ge=0)
    offset: float = 0.0
    slope: float = 1.0
    center: float = 0.0
    prior_posts: float = PRIOR_POSTS
    prediction_variance: float = PREDICTION_VARIANCE
    method: str = METHOD
    fitted: str = ""
    run_ids: list[str] = Field(default_factory=list)
    leave_one_out: dict[str, Any] | None = None

    def apply(self, log2: float) -> float:
        return float(log2 + self.offset + (self.slope - 1.0) * (log2 - self.center))

    def describe_score(
        self, log2: float, interval: tuple[float, float] | None = None
    ) -> dict[str, Any]:
        """What a score shows beside the judge's own value: the calibrated value, the
        judge's interval moved with it (its width is the judge's, not re-estimated), and
        how many posts it rests on."""
        value = self.apply(log2)
        out: dict[str, Any] = {
            "log2_comments": round(value, 4),
            "expected_comments": round(2**value, 2),
            "interval": None,
            "posts": self.posts,
            "method": self.method,
            "fitted": self.fitted,
        }
        if interval is not None:
            half = (interval[1] - interval[0]) / 2
            out["interval"] = [round(value - half, 4), round(value + half, 4)]
        return out


def fit(
    predicted: Sequence[float],
    actual: Sequence[float],
    *,
    predictor: str = "",
    prior_posts: float = PRIOR_POSTS,
    prediction_variance: float = PREDICTION_VARIANCE,
) -> Calibration:
    """The shrunk linear calibration of ``predicted`` to ``actual`` (both log2)."""
    p = np.asarray(predicted, dtype=float)
    y = np.asarray(actual, dtype=float)
    if p.shape != y.shape:
        raise ValueError("predicted and actual must have the same length")
    n = len(p)
    if n == 0:
        return Calibration(predictor=predictor, posts=0, prior_posts=prior_posts)
    center = float(p.mean())
    residual, spread = y - p, p - center
    offset = float(residual.sum() / (n + prior_posts))
    denominator = float((spread**2).sum() + prior_posts * prediction_variance)
    tilt = float((residual * spread).sum() / denominator) if denominator > 0 else 0.0
    return Calibration(
        predictor=predictor,
        posts=n,
        offset=offset,
        slope=max(0.0, 1.0 + tilt),  # never reverse the judge's order
        center=center,
        prior_posts=prior_posts,
        prediction_variance=prediction_variance,
    )


def leave_one_out(
    predicted: Sequence[float],
    actual: Sequence[float],
    *,
    halfwidth: float | None = None,
    prior_posts: float = PRIOR_POSTS,
    prediction_variance: float = PREDICTION_VARIANCE,
) -> dict[str, Any]:
    """Errors before (the judge) and after (a calibration fitted without the post) for
    every post; summaries: MAE, RMSE, mean error (bias), interval coverage."""
    p = np.asarray(predicted, dtype=float)
    y = np.asarray(actual, dtype=float)
    after = np.empty_like(p)
    for i in range(len(p)):
        keep = np.arange(len(p)) != i
        cal = fit(
            p[keep], y[keep], prior_posts=prior_posts, prediction_variance=prediction_variance
        )
        after[i] = cal.apply(p[i])
    return {
        "posts": len(p),
        "before": error_summary(y, p, halfwidth),
        "after": error_summary(y, after, halfwidth),
        "rows": [
            {"predicted": round(float(a), 4), "calibrated": round(float(b), 4), "actual": float(c)}
            for a, b, c in zip(p, after, y, strict=True)
        ],
    }


def error_summary(actual: np.ndarray, predicted: np.ndarray, halfwidth: float | None) -> dict:
    if len(actual) == 0:
        return {"mae": None, "rmse": None, "bias": None, "coverage": None}
    err = predicted - actual
    out = {
        "mae": float(np.abs(err).mean()),
        "rmse": float(math.sqrt((err**2).mean())),
        "bias": float(err.mean()),  # > 0: predicted too many comments
        "coverage": None,
    }
    if halfwidth is not None:
        out["coverage"] = float((np.abs(err) <= halfwidth).mean())
    return out


def log2_outcome(comments: int) -> float:
    """A post's label as the judge's: log2 of its comment count (0 comments counts as 1,
    as log2(0) is undefined; the judge's training videos all have at least one)."""
    return math.log2(max(int(comments), 1))


# -- the file beside the creator's runs ----------------------------------------------


def calibration_path(out_dir: str | Path) -> Path:
    return Path(out_dir).expanduser() / FILE_NAME


def load_calibrations(out_dir: str | Path | None) -> dict[str, Calibration]:
    """The calibrations saved in ``out_dir`` by predictor name (none: empty)."""
    if out_dir is None:
        return {}
    path = calibration_path(out_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        from llmpopcorn.core.errors import DataError

        raise DataError(
            f"cannot read the calibration {path}: {exc}",
            "rerun `popcorn predictor calibrate`, or move the file aside to use the judge "
            "uncalibrated",
        ) from None
    return {name: Calibration(**c) for name, c in (doc.get("calibrations") or {}).items()}


def load_calibration(out_dir: str | Path | None, predictor: str) -> Calibration | None:
    """The calibration of ``predictor`` in ``out_dir``; None without one or without posts
    (a creator with no feedback sees exactly the judge's scores)."""
    found = load_calibrations(out_dir).get(predictor)
    return found if found is not None and found.posts > 0 else None


def save_calibration(out_dir: str | Path, calibration: Calibration) -> Path:
    """Add or replace ``calibration`` (by its predictor) in ``out_dir``'s file."""
    found = load_calibrations(out_dir)
    found[calibration.predictor] = calibration
    doc = {
        "format": FORMAT,
        "calibrations": {k: v.model_dump(mode="json") for k, v in sorted(found.items())},
    }
    path = calibration_path(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    atomic_write(path, lambda fh: fh.write(text))
    return path
