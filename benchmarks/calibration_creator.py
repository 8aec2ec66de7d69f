"""Calibrating the judge to a creator's posts, on synthetic creators built from real
held-out MicroLens videos.

A synthetic creator "posts" real videos of the corpus' reference part (the judge,
``models/judge`` by default, never trained on them) from one category, and their audience
gives each ``2**shift`` times the comments the video really got (shift 0: an audience
like MicroLens'; +2: four times bigger; -1: half). For each creator and number of posts
n, the script draws n videos (seeded, ``--draws`` times), fits the calibration
(:mod:`llmpopcorn.predict.calibration`) and measures, by leave-one-out, how far the
judge and the calibrated judge were off (MAE in log2 comments, bias, 80 % interval
coverage), averaged over the draws.

With ``--demo DIR`` it also runs one creator end to end through the product: a run per
post (``Pipeline.make`` with a scripted LLM that writes the video's real title), the
outcome recorded with ``popcorn feedback``, the fit with ``popcorn predictor calibrate``
(the same commands a user types), whose leave-one-out table it prints.

    python benchmarks/calibration_creator.py --data ../shared/data [--demo /tmp/creator]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SHIFTS = (0.0, 2.0, -1.0)
POSTS = (3, 5, 10, 20, 40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="judge", help="the judge to calibrate")
    parser.add_argument("--categories", type=int, default=4, help="creators' niches")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo", type=Path, default=None, help="folder for the CLI demo")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from llmpopcorn.corpus.partition import in_part
    from llmpopcorn.corpus.table import load_corpus
    from llmpopcorn.predict.calibration import fit, leave_one_out
    from llmpopcorn.predict.scorer import PopularityScorer, resolve_model_dir

    started = time.perf_counter()
    scorer = PopularityScorer(resolve_model_dir(args.model), data_dir=args.data)
    frame = load_corpus(args.data).frame
    held = frame[in_part(frame["video_id"], "reference")]
    held = held[held["comment_count"] > 0]
    niches = held["partition"].value_counts()
    niches = [c for c in niches.index if niches[c] >= max(POSTS) * 2][: args.categories]
    rng = np.random.default_rng(args.seed)
    results = []
    for category in niches:
        rows = held[held["partition"] == category]
        rows = rows.iloc[rng.permutation(len(rows))[: max(POSTS) * 2]]
        table_p = np.array(
            [scorer.score_text(t, category=category).log2_comments for t in rows["title_en"]]
        )
        true_y = np.log2(rows["comment_count"].to_numpy(dtype=float))
        for shift in SHIFTS:
            for n in POSTS:
                before, after = [], []
                for _ in range(args.draws):
                    pick = rng.choice(len(rows), size=n, replace=False)
                    loo = leave_one_out(
                        table_p[pick], true_y[pick] + shift, halfwidth=scorer.halfwidth
                    )
                    before.append(loo["before"])
                    after.append(loo["after"])
                results.append(
                    {
                        "category": category,
                        "shift": shift,
                        "posts": n,
                        "before": _mean(before),
                        "after": _mean(after),
                        "offset_at_40": None,
                    }
                )
        full = fit(table_p[: max(POSTS)], true_y[: max(POSTS)])
        results[-1]["offset_at_40"] = full.offset
    out = {"model": scorer.name, "draws": args.draws, "rows": results}
    if args.demo:
        out["demo"] = demo(args, scorer, held, niches[0])
    out["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"judge {scorer.name}; {args.draws} draws per cell; leave-one-out, log2 comments")
    print(
        "| niche | audience shift | posts | MAE judge | MAE calibrated | bias judge | "
        "bias calibrated | cover judge | cover calibrated |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        b, a = r["before"], r["after"]
        print(
            f"| {r['category']} | {r['shift']:+.0f} | {r['posts']} | {b['mae']:.3f} | "
            f"{a['mae']:.3f} | {b['bias']:+.3f} | {a['bias']:+.3f} | {b['coverage']:.2f} | "
            f"{a['coverage']:.2f} |"
        )
    summary = {}
    for r in results:
        key = (r["shift"], r["posts"])
        summary.setdefault(key, []).append(r["after"]["mae"] - r["before"]["mae"])
    print("\nmean MAE change (calibrated - judge) over the niches:")
    for (shift, n), d in sorted(summary.items()):
        print(f"  shift {shift:+.0f}, {n:>2} posts: {np.mean(d):+.3f}")
    if args.demo:
        print("\n" + out["demo"]["table"])
    print(f"{out['seconds']} s")


def _mean(summaries: list[dict]) -> dict:
    return {
        k: float(np.mean([s[k] for s in summaries])) for k in ("mae", "rmse", "bias", "coverage")
    }


def demo(args, scorer, held, category: str) -> dict:
    """One creator (20 posts, audience x4) through make, feedback and calibrate."""
    from click.testing import CliRunner

    from llmpopcorn.backends.llm.fake import FakeLLM
    from llmpopcorn.cli import main as cli
    from llmpopcorn.core.settings import Settings
    from llmpopcorn.pipeline.core import Pipeline

    out = args.demo.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = held[held["partition"] == category].head(20)
    settings = Settings.resolve(
        env={}, out_dir=out, render=False, predictor=args.model, data_dir=args.data
    )
    replies = [
        json.dumps({"title": t[:50], "cover_prompt": "a cover", "video_prompt": "a clip"})
        for t in rows["title_en"]
    ]
    pipeline = Pipeline(settings, llm=FakeLLM(replies), scorer=scorer)
    runner = CliRunner()
    for title, comments in zip(rows["title_en"], rows["comment_count"], strict=True):
        record = pipeline.make(f"a video like: {title[:80]}")
        result = runner.invoke(
            cli,
            ["feedback", record.run_id, "--comments", str(4 * int(comments)), "--out", str(out)],
        )
        assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli, ["predictor", "calibrate", "--out", str(out), "--model", args.model]
    )
    assert result.exit_code == 0, result.output
    return {"folder": str(out), "category": category, "posts": len(rows), "table": result.output}


if __name__ == "__main__":
    main()
