"""Base vs tuned local model on the paper's 200 queries, judged by the evaluation judge.

Runs the study twice in basic mode, unrendered, judged by ``models/evaluation`` (never
used to make or choose the training pairs): once with ``--llm local --llm-model BASE``
and once with the tuned model (the folder ``popcorn tune --merged`` wrote, which the local
backend converts for onnxruntime-genai; or ``--adapter DIR`` with the transformers
runtime). Then compares the two as arms with the study's own statistics
(:func:`llmpopcorn.study.stats.compare_arms`: queries as the unit, bootstrap interval,
Wilcoxon p; :func:`~llmpopcorn.study.stats.attrition`), under the evaluation judge and,
for the record, under the reward judge that chose the pairs (the difference is the
measured reward hacking). Whatever the sign.

    python benchmarks/tune_eval.py --data ../shared/data --base BASE.gguf \
        --tuned tuned/merged --out /tmp/tune-eval [--limit 20] [-k 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def study(args, name: str, model: str, extra: list[str]) -> Path:
    out = args.out / name
    command = [
        sys.executable, "-c", "from llmpopcorn.cli import main; main()", "bench",
        "--data", str(args.data), "--llm", "local", "--llm-model", model, "--mode", "basic",
        "--no-render", "--predictor", "evaluation", "--baseline-k", "0", "--out", str(out),
        "-k", str(args.k), "--keep-failed", *extra,
    ]  # fmt: skip
    if args.limit:
        command += ["--limit", str(args.limit)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    (args.out / f"{name}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    print(f"{name}: exit {done.returncode} in {time.perf_counter() - started:.0f} s", flush=True)
    return out / "store.sqlite"


def rows_of(store: Path, arm: str) -> list[dict]:
    """The study's cells (with their re-asked replies' reasons), named as one arm."""
    from llmpopcorn.study.bench import study_rows

    rows = study_rows(store)
    for r in rows:
        r["mode"] = arm  # the arm's name in the statistics
        r["refs"] = None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--base", required=True, help="base model (.gguf or folder)")
    parser.add_argument("--tuned", required=True, help="merged tuned model folder")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--limit", type=int, default=None, help="queries per set")
    parser.add_argument("-k", type=int, default=1)
    args = parser.parse_args()

    from llmpopcorn.core.settings import Settings
    from llmpopcorn.study.loop import EVALUATION, REWARD, add_loop_scores
    from llmpopcorn.study.stats import attrition, compare_arms

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base = rows_of(study(args, "base", args.base, []), "base")
    tuned = rows_of(study(args, "tuned", args.tuned, []), "tuned")
    rows = base + tuned
    add_loop_scores(rows, Settings.resolve(data_dir=args.data))
    out = {
        "queries": len({r["query_id"] for r in rows}),
        "attrition": attrition(rows),
        "evaluation_judge": compare_arms(rows, "tuned", "base", score=EVALUATION),
        "reward_judge": compare_arms(rows, "tuned", "base", score=REWARD),
        "study_judge_column": compare_arms(rows, "tuned", "base"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / "tune_eval.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    for a in out["attrition"]:
        print(
            f"{a['arm']}: {a['valid']}/{a['attempted']} valid; invalid by reason "
            f"{a['invalid_by_reason']}; re-asked replies {a['rejected_replies_by_reason']}"
        )
    for name in ("evaluation_judge", "reward_judge"):
        c = out[name]
        ci = c["ci95"]
        print(
            f"tuned - base under the {name.replace('_', ' ')}: {c['mean_gain_log2']:+.3f} log2 "
            f"[{ci[0]:+.3f}, {ci[1]:+.3f}] over {c['pairs']} queries, win rate "
            f"{c['win_rate']:.1%}, Wilcoxon p {c['wilcoxon_p']}"
            if ci
            else f"{name}: {c}"
        )
    print(f"{out['seconds']} s; {args.out / 'tune_eval.json'}")


if __name__ == "__main__":
    main()
