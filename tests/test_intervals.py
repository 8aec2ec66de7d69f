"""The conformal interval is calibrated on a split used for nothing else, and a saved
model can be recalibrated on it without retraining (`popcorn predictor intervals`)."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from llmpopcorn.cli import main
from llmpopcorn.predict.train import conformal_report
from predict_fixtures import synthetic_frame, write_csv


def test_the_interval_is_calibrated_on_held_out_rows_not_on_validation():
    """Validation rows that tuned the model fit it too well (here: perfectly); an interval
    calibrated on them is too narrow. The calibration half of the test split is not."""
    rng = np.random.default_rng(0)
    valid_y = rng.normal(size=500)
    test_y = rng.normal(size=4000)
    test_pred = test_y + rng.normal(size=4000)  # residuals N(0, 1) on unseen rows
    report = conformal_report(valid_y, valid_y.copy(), test_y, test_pred, 0.8)
    assert report["calibration_rows"] == report["coverage_rows"] == 2000
    assert report["calibrated_on"].startswith("calibration split")
    assert abs(report["halfwidth"] - 1.2816) < 0.1  # the 80 % quantile of |N(0, 1)|
    assert abs(report["test_coverage"] - 0.8) < 0.03
    # too few held-out rows: validation, and it says so
    small = conformal_report(valid_y, valid_y + 0.5, test_y[:1], test_pred[:1], 0.8)
    assert small["calibrated_on"].startswith("validation") and small["coverage_rows"] == 1


def test_intervals_cli_recalibrates_a_saved_model_without_retraining(tmp_path):
    data = write_csv(tmp_path / "train.csv", synthetic_frame(400, seed=0))
    out = tmp_path / "m"
    trained = CliRunner().invoke(
        main, ["predictor", "train", "--data", str(data), "--out", str(out), "--seed", "3",
               "--only", "tfidf-ridge"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    config = json.loads((out / "config.json").read_text())
    fresh = config["conformal"]
    assert fresh["calibrated_on"].startswith("calibration split")
    assert fresh["calibration_rows"] == fresh["coverage_rows"] == 20  # 40 test rows
    weights = (out / "weights.npz").read_bytes()
    # a model from before the calibration split: its interval came from validation
    config["conformal"] = {"level": 0.8, "halfwidth": 0.1, "calibrated_on": "validation split"}
    (out / "config.json").write_text(json.dumps(config))
    args = ["predictor", "intervals", "--model", str(out), "--data", str(data)]
    result = CliRunner().invoke(main, [*args, "--write", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["before"]["halfwidth"] == 0.1 and report["written"]
    assert report["after"]["halfwidth"] == fresh["halfwidth"]  # the same calibration rows
    saved = json.loads((out / "config.json").read_text())["conformal"]
    for key in ("halfwidth", "test_coverage", "calibrated_on"):
        assert saved[key] == fresh[key], key
    assert (out / "weights.npz").read_bytes() == weights  # no retraining
    other = write_csv(tmp_path / "other.csv", synthetic_frame(400, seed=9))
    wrong = CliRunner().invoke(main, ["predictor", "intervals", "--model", str(out),
                                      "--data", str(other)])  # fmt: skip
    assert wrong.exit_code == 2 and "another corpus file" in wrong.stderr
