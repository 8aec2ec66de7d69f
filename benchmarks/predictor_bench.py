"""Predictor benchmark: train every model on the seeded split, print the tables, time
training (embedding included) and warm scoring of one idea.

    python benchmarks/predictor_bench.py --data "$POPCORN_DATA" --out /tmp/popcorn-model \
        [--fresh-cache] [--json results.json]

``--fresh-cache`` embeds the corpus into an empty cache directory, so the training
time includes embedding the corpus (the target: under 10 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from llmpopcorn.core.types import Idea
from llmpopcorn.predict.scorer import PopularityScorer
from llmpopcorn.predict.train import json_safe, metrics_table, train_and_save

IDEAS = [
    Idea(
        title="A corgi learns to surf",
        cover_prompt="a corgi on a surfboard, sunny beach",
        video_prompt="a corgi rides a small wave and falls off, slow motion",
    ),
    Idea(
        title="Speedrun: the hardest boss in 30 s",
        cover_prompt="a game boss fight, neon",
        video_prompt="fast cuts of a player dodging attacks",
    ),
    Idea(
        title="Grandma's noodle secret",
        cover_prompt="steaming bowl of hand-pulled noodles",
        video_prompt="hands pulling noodles, flour in the air",
    ),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--model", default="auto")
    ap.add_argument("--fresh-cache", action="store_true")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads while embedding")
    ap.add_argument("--json", default=None, help="write the numbers here")
    args = ap.parse_args(argv)

    cache = args.cache_dir
    tmp = None
    if args.fresh_cache:
        tmp = tempfile.TemporaryDirectory(prefix="popcorn-bench-cache-")
        cache = tmp.name
    started = time.perf_counter()
    path, metrics = train_and_save(
        args.data,
        args.out,
        model=args.model,
        seed=args.seed,
        cache_dir=cache,
        threads=args.threads or None,
    )
    train_s = time.perf_counter() - started
    print(metrics_table(metrics, "valid"))
    print()
    print(metrics_table(metrics, "test"))
    print(f"\ndefault: {metrics['default']} ({metrics['selection']})")
    print(f"train from scratch: {train_s:.1f} s (embedding {metrics['embed_seconds']:.1f} s)")

    load_started = time.perf_counter()
    scorer = PopularityScorer(path)
    scorer.score(IDEAS[0])  # loads the embedder
    cold_s = time.perf_counter() - load_started
    times = []
    for _ in range(10):
        for idea in IDEAS:
            t0 = time.perf_counter()
            scorer.score(idea)
            times.append(time.perf_counter() - t0)
    warm_ms = 1000 * statistics.median(times)
    size = sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())
    print(
        f"scorer load + first score: {cold_s:.2f} s; warm score: median {warm_ms:.1f} ms "
        f"(p90 {1000 * sorted(times)[int(0.9 * len(times))]:.1f} ms)"
    )
    print(f"model directory: {path} ({size / 2**20:.1f} MB)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                json_safe(
                    {
                        "metrics": metrics,
                        "train_seconds": train_s,
                        "score_cold_seconds": cold_s,
                        "score_warm_ms_median": warm_ms,
                        "model_bytes": size,
                    }
                ),
                indent=2,
            )
        )
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
