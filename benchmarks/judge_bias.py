"""How much of the PE - basic gain is the judge remembering PE's references?

Reads the run records of one or more finished studies (``popcorn bench --out DIR``)
and scores every idea again with two judges on the *same ideas*:

* ``default``: the shipped model trained on all videos (what ``popcorn make`` uses);
* ``judge``: the model trained only on the judge part (``models/judge`` or
  ``--judge DIR``), which never saw the reference part PE draws from in the study.

For each study and judge it prints the paired PE - basic gain (mean over queries,
bootstrap 95 % interval, PE win rate) and how many PE references sit in that judge's
memory. A study whose PE used ``--pe-pool all`` scored by ``default`` is the biased
setting; one with ``--pe-pool reference`` scored by ``judge`` is the independent one.

    python benchmarks/judge_bias.py /tmp/study-all /tmp/study-reference [--judge DIR]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import numpy as np

from llmpopcorn.predict.scorer import PopularityScorer, resolve_model_dir


def study_records(study: Path) -> list[dict]:
    """Every finished cell's record (query id, mode, idea, category, references)."""
    conn = sqlite3.connect(study / "store.sqlite")
    conn.row_factory = sqlite3.Row
    table = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    name = "cells" if "cells" in table else "items"
    rows = [dict(r) for r in conn.execute(f"SELECT * FROM {name} WHERE status='ok'")]
    out = []
    for row in rows:
        run_dir = row.get("run_dir")
        if not run_dir or not (Path(run_dir) / "record.json").exists():
            continue
        record = json.loads((Path(run_dir) / "record.json").read_text("utf-8"))
        if not record.get("idea"):
            continue
        out.append(
            {
                "query_id": row.get("query_id") or record["query"],
                "mode": record["mode"],
                "n_refs": (record.get("enhancement") or {}).get("n_refs"),
                "idea": record["idea"],
                "category": (record.get("category") or {}).get("name", ""),
                "refs": [r["video_id"] for r in record.get("references", [])],
            }
        )
    return out


def bootstrap(values: np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n, len(values)), replace=True).mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def gain(records: list[dict], scorer: PopularityScorer) -> dict:
    memory = set(map(str, scorer.memory_ids()))
    scores: dict[tuple[str, str], float] = {}
    in_memory = refs = 0
    for rec in records:
        idea = rec["idea"]
        s = scorer.score_text(idea["title"], category=rec["category"])
        scores[(rec["query_id"], rec["mode"])] = s.log2_comments
        if rec["mode"] == "pe":
            refs += len(rec["refs"])
            in_memory += sum(str(r) in memory for r in rec["refs"])
    pairs = [
        scores[(q, "pe")] - scores[(q, "basic")]
        for (q, mode) in scores
        if mode == "pe" and (q, "basic") in scores
    ]
    diffs = np.array(pairs)
    lo, hi = bootstrap(diffs)
    return {
        "pairs": len(diffs),
        "gain": float(diffs.mean()),
        "ci": [lo, hi],
        "pe_win_rate": float(np.mean(diffs > 0) + 0.5 * np.mean(diffs == 0)),
        "refs_in_memory": in_memory,
        "refs": refs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", type=Path)
    parser.add_argument("--judge", default="judge", help="the independent judge (name or dir)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    judges = {
        "default (all videos)": PopularityScorer(resolve_model_dir("default")),
        "judge (judge part only)": PopularityScorer(resolve_model_dir(args.judge)),
    }
    results = {}
    print(
        "| study (PE pool) | judge | pairs | PE - basic (log2) | 95 % CI | PE wins "
        "| PE refs in judge memory |"
    )
    print("|---|---|---|---|---|---|---|")
    for study in args.studies:
        records = study_records(study)
        for label, scorer in judges.items():
            r = gain(records, scorer)
            results[f"{study}|{label}"] = r
            share = r["refs_in_memory"] / max(r["refs"], 1)
            print(
                f"| {study.name} | {label} | {r['pairs']} | {r['gain']:+.3f} | "
                f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | {r['pe_win_rate']:.0%} | "
                f"{r['refs_in_memory']}/{r['refs']} ({share:.0%}) |"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
