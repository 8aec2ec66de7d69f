"""The loop's two judges: how good each is on videos neither saw, how much they agree,
and how independent they are of each other and of PE's references.

* metrics (nMSE, MAE, SRC, 80 % interval coverage) of the reward and the evaluation judge
  on the corpus' reference part (neither trained on it) and on the other judge's part;
* Spearman correlation between the two judges' predictions on the reference part: how
  much one judge's ranking tells about the other's (the ceiling of what a loop that climbs
  the reward judge can show the evaluation judge);
* the overlap between the reward part, the evaluation part and the reference part by
  video id (zero by construction) and by normalised title.

    python benchmarks/loop_judges.py --data ../shared/data [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="data directory (microlens/videos.csv)")
    parser.add_argument("--reward", default="reward", help="reward judge (name or folder)")
    parser.add_argument("--evaluation", default="evaluation", help="evaluation judge")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    from scipy.stats import spearmanr

    from llmpopcorn.corpus.partition import in_part
    from llmpopcorn.predict.base import load_model, read_config
    from llmpopcorn.predict.conformal import coverage, interval
    from llmpopcorn.predict.data import load_table
    from llmpopcorn.predict.judges import LoopJudges
    from llmpopcorn.predict.metrics import regression_report
    from llmpopcorn.predict.scorer import resolve_model_dir

    started = time.perf_counter()
    judges = LoopJudges.load(reward=args.reward, evaluation=args.evaluation)
    table, _ = load_table(args.data, text_fields=["title"])
    parts = {
        p: np.flatnonzero(in_part(table.ids, p)) for p in ("reference", "reward", "evaluation")
    }
    out: dict = {"judges": judges.describe(), "metrics": {}, "agreement": {}}
    preds: dict[str, dict[str, np.ndarray]] = {}
    for role, name in (("reward", args.reward), ("evaluation", args.evaluation)):
        path = resolve_model_dir(name)
        model, half = load_model(path), read_config(path)["conformal"]["halfwidth"]
        preds[role] = {}
        for part, rows in parts.items():
            if part == role:
                continue  # its own part: trained on it
            sub = table.take(rows)
            p = model.predict(sub)
            preds[role][part] = p
            report = regression_report(sub.labels, p)
            report["coverage80"] = coverage(sub.labels, *interval(p, half))
            out["metrics"][f"{role} on {part}"] = report
    ref = preds["reward"]["reference"], preds["evaluation"]["reference"]
    out["agreement"]["spearman_on_reference"] = float(spearmanr(*ref).statistic)
    out["agreement"]["pearson_on_reference"] = float(np.corrcoef(*ref)[0, 1])
    out["agreement"]["rows"] = len(ref[0])
    out["independence"] = judges.independence(args.data)
    out["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return
    print("| judge on part | rows | nMSE | MAE | SRC | 80% cover |")
    print("|---|---|---|---|---|---|")
    for key, m in out["metrics"].items():
        print(
            f"| {key} | {m['n']} | {m['nmse']:.3f} | {m['mae']:.3f} | {m['src']:.3f} "
            f"| {m['coverage80']:.3f} |"
        )
    a = out["agreement"]
    print(
        f"\nreward vs evaluation predictions on the {a['rows']} reference videos: "
        f"Spearman {a['spearman_on_reference']:.3f}, Pearson {a['pearson_on_reference']:.3f}"
    )
    print("independence:", json.dumps(out["independence"], indent=1))
    print(f"{out['seconds']} s")


if __name__ == "__main__":
    main()
