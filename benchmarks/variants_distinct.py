"""Do `--variants 3` runs give three distinct titles? Basic and PE, on queries the variant
logic was not tuned on.

The 200 benchmark queries in file order (abstract, then concrete); a fixed seeded sample
(``random.Random(SEED).sample``) of ``--queries`` of them is the held-out set (the stand-in's
wording was tuned on the other 180). Each query runs through ``Pipeline.make`` with
``variants=3`` (no rendering, the shipped judge ranks the variants) in basic and in PE
mode. Reported per mode: queries whose three titles are pairwise distinct by the project's
measure (:func:`llmpopcorn.core.copycheck.similar_title`, difflib 0.85 after normalising),
titles flagged ``duplicate_of`` in the record, re-asks for a duplicate, titles cut with an
ellipsis, captions equal to the video prompt, idea counts, and the seconds per run.

    python benchmarks/variants_distinct.py --data ../shared/data [--llm offline] [--queries 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import time
from itertools import combinations
from pathlib import Path

from llmpopcorn.core.copycheck import similar_title
from llmpopcorn.core.settings import Settings
from llmpopcorn.pipeline.core import Pipeline

SEED = 2323


def project_queries(n: int) -> list[str]:
    """The first ``n`` of the 54 creator queries written for this project
    (benchmarks/data/category_queries.json), which the stand-in was never tuned on."""
    path = Path(__file__).parent / "data" / "category_queries.json"
    return [q["query"] for q in json.loads(path.read_text(encoding="utf-8"))["queries"]][:n]


def held_out(data: Path, n: int) -> list[str]:
    queries = []
    for name in ("abstract_prompts.txt", "concrete_prompts.txt"):
        text = (Path(data) / "prompts" / name).read_text(encoding="utf-8")
        queries += [q.strip() for q in text.splitlines() if q.strip()]
    return [queries[i] for i in sorted(random.Random(SEED).sample(range(len(queries)), n))]


def run_mode(mode: str, queries: list[str], args, out: Path) -> dict:
    settings = Settings.resolve(
        mode=mode,
        data_dir=args.data,
        llm=args.llm,
        variants=3,
        render=False,
        out_dir=out / mode,
        cache_dir=args.cache_dir,
    )
    pipeline = Pipeline(settings)
    rows, seconds = [], []
    for query in queries:
        started = time.perf_counter()
        record = pipeline.make(query)
        seconds.append(time.perf_counter() - started)
        titles = [v.idea.title for v in record.variants if v.idea is not None]
        distinct = len(titles) == 3 and all(
            similar_title(a, [b]) is None for a, b in combinations(titles, 2)
        )
        rows.append(
            {
                "query": query,
                "titles": titles,
                "distinct": distinct,
                "flagged": sum(v.duplicate_of is not None for v in record.variants),
                "duplicate_reasks": sum(
                    "another variant" in (a.error or "") for a in record.attempts
                ),
                "ellipsis": sum("…" in t for t in titles),
                "caption_is_prompt": sum(
                    v.idea.caption == v.idea.video_prompt for v in record.variants if v.idea
                ),
                "hashtags": record.idea.hashtags if record.idea else [],
            }
        )
    return {
        "mode": mode,
        "llm": pipeline.llm.describe().model_dump(include={"name", "model", "is_llm"}),
        "queries": len(rows),
        "three_distinct": sum(r["distinct"] for r in rows),
        "flagged_duplicates": sum(r["flagged"] for r in rows),
        "duplicate_reasks": sum(r["duplicate_reasks"] for r in rows),
        "titles_with_ellipsis": sum(r["ellipsis"] for r in rows),
        "captions_equal_to_video_prompt": sum(r["caption_is_prompt"] for r in rows),
        "seconds_per_run_median": round(sorted(seconds)[len(seconds) // 2], 3),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--llm", default="offline")
    parser.add_argument("--modes", default="basic,pe")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument(
        "--set",
        choices=("paper", "project"),
        default="paper",
        help="paper: the held-out sample of the 200 queries; project: the project's own 54",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.set == "paper":
        queries = held_out(args.data, args.queries)
    else:
        queries = project_queries(args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_mode(m, queries, args, Path(tmp)) for m in args.modes.split(",")]
    sample = (
        f"random.Random({SEED}).sample of the 200 queries, {len(queries)} held out"
        if args.set == "paper"
        else f"the first {len(queries)} of the project's 54 creator queries"
    )
    summary = {
        "sample": sample,
        "load_average": os.getloadavg(),
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    for result in results:
        print(
            f"{result['mode']}: {result['three_distinct']}/{result['queries']} queries with 3 "
            f"distinct titles; flagged {result['flagged_duplicates']}, duplicate re-asks "
            f"{result['duplicate_reasks']}, ellipsis {result['titles_with_ellipsis']}, "
            f"caption = video prompt {result['captions_equal_to_video_prompt']}; "
            f"median {result['seconds_per_run_median']} s per run ({result['llm']})"
        )
        for row in result["rows"]:
            mark = "ok " if row["distinct"] else "DUP"
            print(f"  {mark} {row['query'][:60]!r}: {row['titles']}")
    print(f"load average {summary['load_average']}")


if __name__ == "__main__":
    main()
