"""How well each category matcher picks a query's category, and what PE then shows.

On the labelled set ``benchmarks/data/category_queries.json`` (queries written for this
project, each with the MicroLens categories a person would accept) it reports, per
matcher (``name``: the paper's match on category names, no minimum size; ``name``
with the minimum size; ``centroid``: the default):

* accuracy: the top category is one of the accepted ones;
* the mean cosine similarity between the query and PE's 50 references;
* how many queries get fewer references than asked from their category (top-ups).

On the paper's 200 queries (``<data>/prompts``) it reports which categories each
matcher picks, how many queries would have been short of references without the
top-up, and how often the judge's resolver (the predictor's retrieval memory) agrees
with PE's (the corpus index).

    python benchmarks/bench_categories.py --data ../shared/data [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from llmpopcorn.core.settings import Settings
from llmpopcorn.corpus.index import CorpusIndex, get_embedder
from llmpopcorn.corpus.table import load_corpus
from llmpopcorn.enhance.pe import PEParams, PEPromptBuilder
from llmpopcorn.predict import load_scorer

HERE = Path(__file__).resolve().parent
LABELS = HERE / "data" / "category_queries.json"
MATCHERS = {
    "name (paper, no minimum)": {"category_match": "name", "min_category_size": 1},
    "name, minimum 50 videos": {"category_match": "name", "min_category_size": 50},
    "centroid, minimum 50 videos (default)": {
        "category_match": "centroid",
        "min_category_size": 50,
    },
}


def paper_queries(data: Path) -> list[str]:
    out = []
    for kind in ("abstract", "concrete"):
        path = data / "prompts" / f"{kind}_prompts.txt"
        out += [line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()]
    return out


def evaluate(index: CorpusIndex, labelled: list[dict], params: dict) -> dict:
    builder = PEPromptBuilder(index, PEParams(**params))
    correct, sims, topped, picks = 0, [], 0, []
    for item in labelled:
        selection = builder.select(item["query"])
        top = selection.categories[0]["name"]
        picks.append(top)
        correct += top in item["accept"]
        sims.append(float(np.mean([r.similarity for r in selection.references])))
        topped += bool(selection.topped_up)
    return {
        "accuracy": correct / len(labelled),
        "correct": correct,
        "n": len(labelled),
        "mean_reference_similarity": float(np.mean(sims)),
        "queries_topped_up": topped,
        "picks": picks,
    }


def paper_study(index: CorpusIndex, queries: list[str], params: dict, n_refs: int = 50) -> dict:
    builder = PEPromptBuilder(index, PEParams(n_refs=n_refs, **params))
    picks: Counter = Counter()
    short = topped = 0
    sims = []
    for query in queries:
        selection = builder.select(query)
        first = selection.categories[0]
        picks[first["name"]] += 1
        short += first["pool_videos"] < n_refs
        topped += bool(selection.topped_up)
        sims.append(float(np.mean([r.similarity for r in selection.references])))
    return {
        "categories_picked": dict(picks.most_common()),
        "queries_whose_category_is_short_of_refs": short,
        "queries_topped_up": topped,
        "mean_reference_similarity": float(np.mean(sims)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    corpus = load_corpus(args.data)
    settings = Settings.resolve(data_dir=args.data, cache_dir=args.cache_dir)
    index = CorpusIndex.open(corpus, get_embedder("minilm", settings), args.cache_dir)
    labelled = json.loads(LABELS.read_text("utf-8"))["queries"]
    queries = paper_queries(args.data)
    results: dict = {"labelled": {}, "paper_200": {}, "load_seconds": time.perf_counter() - started}
    for label, params in MATCHERS.items():
        results["labelled"][label] = evaluate(index, labelled, params)
        results["paper_200"][label] = paper_study(index, queries, params)
    # the judge's resolver (its retrieval memory) against PE's (the corpus index)
    scorer = load_scorer(settings)
    builder = PEPromptBuilder(index, PEParams())
    agree = sum(
        scorer.resolve_category(q) == builder.select(q).categories[0]["name"] for q in queries
    )
    agree_labelled = sum(
        scorer.resolve_category(item["query"]) in item["accept"] for item in labelled
    )
    results["judge_resolver"] = {
        "agrees_with_pe_on_paper_queries": agree,
        "paper_queries": len(queries),
        "accuracy_on_labelled": agree_labelled / len(labelled),
    }

    print(f"Labelled set: {len(labelled)} queries ({LABELS.name})\n")
    print("| matcher | accuracy | mean query-reference similarity | queries topped up |")
    print("|---|---|---|---|")
    for label, r in results["labelled"].items():
        print(
            f"| {label} | {r['correct']}/{r['n']} ({r['accuracy']:.0%}) | "
            f"{r['mean_reference_similarity']:.3f} | {r['queries_topped_up']} |"
        )
    print(f"\nThe paper's {len(queries)} queries (50 references each):\n")
    print("| matcher | category short of 50 refs | mean similarity | top categories |")
    print("|---|---|---|---|")
    for label, r in results["paper_200"].items():
        top = ", ".join(f"{k} {v}" for k, v in list(r["categories_picked"].items())[:5])
        print(
            f"| {label} | {r['queries_whose_category_is_short_of_refs']} | "
            f"{r['mean_reference_similarity']:.3f} | {top} |"
        )
    j = results["judge_resolver"]
    print(
        f"\nJudge resolver (predictor memory) agrees with PE's (corpus index) on "
        f"{j['agrees_with_pe_on_paper_queries']}/{j['paper_queries']} paper queries; "
        f"its accuracy on the labelled set: {j['accuracy_on_labelled']:.0%}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
