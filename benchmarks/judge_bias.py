"""How much of the PE - basic gain is the judge remembering PE's references?

Reads the cells of one or more finished studies (``popcorn bench --out DIR``, one group
of settings each) and scores every idea again with two judges on the *same ideas*:

* ``default``: the shipped model trained on all videos (what ``popcorn make`` uses);
* ``judge``: the model trained only on the judge part (``models/judge`` or
  ``--judge DIR``), which never saw the reference part PE draws from in the study.

For each study and judge it prints the PE - basic comparison with the study's own
statistics (:func:`llmpopcorn.study.stats.compare_arms`: each arm averaged over its seeds
within a query, paired by query, bootstrap 95 % interval, win rate, Wilcoxon p), the
p-values Holm-adjusted over the whole table, and how many PE references the judge
already knows (:func:`llmpopcorn.corpus.independence.reference_overlap`, the study's own
count): by video id (its memory), by normalised title (a title of a video it learned
from) and as near-duplicates (cosine >= 0.95 on PE's cached corpus embeddings). A study
whose PE used ``--pe-pool all`` scored by ``default`` is the biased setting;
``--pe-pool reference`` scored by ``judge`` the independent one.

    python benchmarks/judge_bias.py /tmp/study-all /tmp/study-reference --data DIR
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from llmpopcorn.core.cache import default_cache_dir
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import Reference
from llmpopcorn.corpus.independence import JudgeData, judge_data, reference_overlap
from llmpopcorn.corpus.index import CorpusIndex, get_embedder
from llmpopcorn.corpus.table import load_corpus
from llmpopcorn.predict.scorer import PopularityScorer, resolve_model_dir
from llmpopcorn.study.bench import study_rows
from llmpopcorn.study.stats import arm_name, compare_arms, holm


def study_cells(study: Path) -> list[dict]:
    """Every finished cell with its idea, category and references (from record.json)."""
    out = []
    for row in study_rows(study / "store.sqlite"):
        run_dir = row.get("run_dir")
        if row["status"] != "ok" or not run_dir or not (Path(run_dir) / "record.json").exists():
            continue
        record = json.loads((Path(run_dir) / "record.json").read_text("utf-8"))
        if record.get("idea"):
            refs = record.get("references", [])
            category = (record.get("category") or {}).get("name", "")
            out.append(
                row | {"idea": record["idea"], "category_name": category, "references": refs}
            )
    return out


def rescore(cells: list[dict], scorer: PopularityScorer, known: JudgeData, index) -> dict:
    """The cells scored by ``scorer`` (column ``score``) and its overlap with PE's refs."""
    rows = []
    counts = {"refs": 0, "in_memory": 0, "title_in_part": 0, "near": 0}
    for cell in cells:
        s = scorer.score_text(cell["idea"]["title"], category=cell["category_name"])
        rows.append({**cell, "score": s.log2_comments})
        if cell["mode"] == "pe":
            refs = [Reference(**r) for r in cell["references"]]
            found = reference_overlap(refs, known, index=index)
            counts["refs"] += len(refs)
            counts["in_memory"] += found["in_memory"] or 0
            counts["title_in_part"] += found["by_title"]
            counts["near"] += found["near_duplicates"] or 0
    return {"rows": rows, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", type=Path)
    parser.add_argument("--judge", default="judge", help="the independent judge (name or dir)")
    parser.add_argument("--data", default=os.environ.get("POPCORN_DATA"), help="data directory")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    judges = {
        "default (all videos)": PopularityScorer(resolve_model_dir("default")),
        "judge (judge part only)": PopularityScorer(resolve_model_dir(args.judge)),
    }
    corpus = load_corpus(args.data)
    settings = Settings.resolve(data_dir=args.data)
    index = CorpusIndex.open(
        corpus, get_embedder(settings.embedder, settings), default_cache_dir(settings)
    )
    known = {
        label: judge_data(corpus, scorer.part, scorer.memory_ids())
        for label, scorer in judges.items()
    }
    results = []
    for study in args.studies:
        cells = study_cells(study)
        arms = sorted({arm_name(c) for c in cells if c["mode"] == "pe"})
        for label, scorer in judges.items():
            scored = rescore(cells, scorer, known[label], index)
            for arm in arms:
                comp = compare_arms(scored["rows"], arm, score="score")
                overlap = {k: scored[k] for k in ("refs", "in_memory", "title_in_part", "near")}
                results.append({"study": study.name, "judge": label, **comp, **overlap})
    for r, p in zip(results, holm([r["wilcoxon_p"] for r in results]), strict=True):
        r["p_adjusted"] = p
    print(
        "| study (PE pool) | judge | arm | pairs (queries) | PE - basic (log2) | 95 % CI | PE wins "
        "| Wilcoxon p | Holm p | PE refs in judge memory (id) | same title as its training part "
        "| near-duplicate (cosine >= 0.95) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        lo, hi = r["ci95"]
        print(
            f"| {r['study']} | {r['judge']} | {r['arm']} | {r['pairs']} | "
            f"{r['mean_gain_log2']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {r['win_rate']:.0%} | "
            f"{r['wilcoxon_p']:.2g} | {r['p_adjusted']:.2g} | "
            f"{r['in_memory']}/{r['refs']} ({r['in_memory'] / max(r['refs'], 1):.0%}) | "
            f"{r['title_in_part']}/{r['refs']} ({r['title_in_part'] / max(r['refs'], 1):.1%}) | "
            f"{r['near']}/{r['refs']} ({r['near'] / max(r['refs'], 1):.1%}) |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
