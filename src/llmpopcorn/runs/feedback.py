"""What posted videos really got, and the judge calibrated to it.

``popcorn feedback RUN_ID --comments N`` finds the run's folder under the output folder
(a ``make`` run, a batch item, a study cell or a studio run), copies the judge's
prediction from its record and stores the outcome in the run store's ``feedback`` table
(:mod:`llmpopcorn.runs.store`). ``popcorn predictor calibrate`` fits the creator's
calibration of a predictor to those outcomes (:mod:`llmpopcorn.predict.calibration`),
measures it by leave-one-out and saves it beside the store, where the scorer finds it.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import DataError, InputError
from llmpopcorn.core.types import utcnow
from llmpopcorn.runs.store import Store

#: how deep run folders sit under the output folder: make runs (1), batch items and study
#: cells (2), studio runs (OUT/web/<job>/<run>: 3)
SEARCH_DEPTH = 3
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,80}$")


def find_run(out_dir: Path, run: str) -> Path:
    """The folder of run ``run`` (a run id, or the path of a run folder)."""
    given = Path(run).expanduser()
    if (given / "record.json").is_file():
        return given.resolve()
    if not _RUN_ID.match(run):
        raise InputError(
            f"not a run id or run folder: {run!r}",
            "pass the run id `popcorn make` printed (e.g. 20261205-101532-b82090) or the "
            "run's folder",
        )
    out_dir = Path(out_dir).expanduser()
    if not out_dir.is_dir():
        raise DataError(
            f"no output folder {out_dir}", "pass --out with the folder the run was made in"
        )
    named = sorted(p.parent for p in out_dir.glob(f"{run}*/record.json"))
    if len(named) == 1:
        return named[0].resolve()
    for depth in range(1, SEARCH_DEPTH + 1):
        for path in sorted(out_dir.glob("/".join(["*"] * depth) + "/record.json")):
            if ".staging" in path.parts:
                continue
            if _record_run_id(path) == run:
                return path.parent.resolve()
    raise DataError(
        f"no run {run} under {out_dir}",
        "check the id (it is in the run's record.json) and pass --out with the folder the "
        "run was made in",
    )


def _record_run_id(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError):
        return None


def check_posted(text: str | None) -> str | None:
    """An ISO date (YYYY-MM-DD), not in the future."""
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"--posted must be a date like 2026-12-05, got {text!r}", "use YYYY-MM-DD"
        ) from None
    if day > date.today():
        raise InputError(f"--posted {text} is in the future", "pass the day the video went up")
    return day.isoformat()


def record_feedback(
    store: Store,
    run_dir: Path,
    *,
    comments: int,
    likes: int | None = None,
    views: int | None = None,
    posted: str | None = None,
) -> dict[str, Any]:
    """Store what the run's posted video got; returns the stored row plus ``new``."""
    from llmpopcorn.pipeline.report import load_record

    for name, value in (("comments", comments), ("likes", likes), ("views", views)):
        if value is not None and value < 0:
            raise InputError(f"--{name} must be 0 or more, got {value}", f"pass the real {name}")
    try:
        record = load_record(run_dir)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the run's record in {run_dir}: {exc}", "") from None
    score = record.score
    row = {
        "run_id": record.run_id,
        "comments": int(comments),
        "likes": likes,
        "views": views,
        "posted": check_posted(posted),
        "predictor": score.predictor if score else None,
        "predicted_log2": score.log2_comments if score else None,
        "interval_low": score.interval[0] if score and score.interval else None,
        "interval_high": score.interval[1] if score and score.interval else None,
        "category": score.category if score else None,
        "title": record.idea.title if record.idea else None,
        "query": record.query,
        "run_dir": str(run_dir),
    }
    new = store.put_feedback(row)
    return {**row, "new": new}


def calibrate(
    store: Store,
    out_dir: Path,
    predictor: str,
    *,
    halfwidth: float | None = None,
    prior_posts: float | None = None,
    save: bool = True,
) -> tuple[Any, list[dict[str, Any]]]:
    """Fit ``predictor``'s calibration to the feedback of runs it scored, measure it by
    leave-one-out, save it in ``out_dir`` (:func:`llmpopcorn.predict.calibration.save_calibration`).
    Returns the calibration and the feedback rows used."""
    from llmpopcorn.predict.calibration import (
        PRIOR_POSTS,
        fit,
        leave_one_out,
        log2_outcome,
        save_calibration,
    )

    prior = PRIOR_POSTS if prior_posts is None else prior_posts
    if prior < 0:
        raise InputError(f"--prior-posts must be 0 or more, got {prior}", "5 is the default")
    rows = [r for r in store.feedback(predictor) if r["predicted_log2"] is not None]
    if not rows:
        scored_by = sorted({r["predictor"] for r in store.feedback() if r["predictor"]})
        raise DataError(
            f"no feedback for runs scored by {predictor} in {store.path}",
            "record outcomes with `popcorn feedback RUN_ID --comments N`"
            + (
                f"; feedback here is for: {', '.join(scored_by)} (pass --model)"
                if scored_by
                else ""
            ),
        )
    predicted = [r["predicted_log2"] for r in rows]
    actual = [log2_outcome(r["comments"]) for r in rows]
    calibration = fit(predicted, actual, predictor=predictor, prior_posts=prior)
    calibration.fitted = utcnow()
    calibration.run_ids = [r["run_id"] for r in rows]
    loo = leave_one_out(predicted, actual, halfwidth=halfwidth, prior_posts=prior)
    for row, detail in zip(rows, loo["rows"], strict=True):
        detail.update(run_id=row["run_id"], title=row["title"], comments=row["comments"])
    calibration.leave_one_out = loo
    if save:
        save_calibration(out_dir, calibration)
    return calibration, rows
