"""How much PE changes the offline composer's ideas (no LLM involved).

For each benchmark query, the offline composer answers the basic prompt and the PE
prompt. Reported: how often the titles differ, whether every PE title is original
(the copy check), and the mean MiniLM cosine between the idea text (title + cover +
video prompt) and the centroid of the query's popular references, basic vs PE.

    python benchmarks/pe_offline_difference.py --data ../shared/data --queries 20
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from bench_pe import load_queries

from llmpopcorn.backends.llm.offline import OfflineComposer
from llmpopcorn.core.settings import Settings
from llmpopcorn.enhance.pe import PEPromptBuilder, find_copy
from llmpopcorn.enhance.prompts import BasicPromptBuilder
from llmpopcorn.pipeline.ideate import SamplingParams, ideate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--embedder", default="minilm")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings.resolve(
        mode="pe", data_dir=args.data, embedder=args.embedder, cache_dir=args.cache_dir
    )
    pe, basic, composer = (
        PEPromptBuilder.from_settings(settings),
        BasicPromptBuilder(),
        OfflineComposer(),
    )
    embed = pe.index.embedder.embed
    rows = []
    for query in load_queries(args.data, args.queries):
        prompt = pe.build(query)
        ideas = [ideate(composer, p, SamplingParams()).idea for p in (basic.build(query), prompt)]
        popular = [r.title for r in prompt.references if r.label == "popular"]
        centroid = embed(popular).mean(axis=0)
        centroid /= np.linalg.norm(centroid)
        vecs = embed([f"{i.title}. {i.cover_prompt} {i.video_prompt}" for i in ideas])
        original = find_copy(ideas[1].title, prompt.references) is None
        rows.append(
            (vecs[0] @ centroid, vecs[1] @ centroid, ideas[0].title != ideas[1].title, original)
        )
    a = np.array(rows, dtype=float)
    n = len(rows)
    print(
        json.dumps(
            {
                "queries": n,
                "cosine_to_popular_centroid_basic": round(float(a[:, 0].mean()), 4),
                "cosine_to_popular_centroid_pe": round(float(a[:, 1].mean()), 4),
                "pe_closer_in": f"{int((a[:, 1] > a[:, 0]).sum())}/{n}",
                "titles_differ": f"{int(a[:, 2].sum())}/{n}",
                "pe_titles_original": f"{int(a[:, 3].sum())}/{n}",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
