"""Preference pairs from batches and studies: what ``popcorn runs export ID --pairs`` writes
(JSONL in the conversational format TRL's DPO trainer reads: ``prompt``, ``chosen``,
``rejected``).

For every query with two or more distinct ideas (a batch's variants, a study's arms and
seeds, and every round of a refined run), each pair of ideas whose **reward** judge scores
differ by at least ``min_margin`` (log2 comments) becomes one line: the higher-scored idea
is ``chosen``. The prompt is the basic-mode prompt for the query, so a model tuned on the
file learns to answer the plain request with what the reward judge preferred, whatever
arm produced it.

Both loop judges' scores go with each pair, and ``judges_agree`` says whether the
**evaluation** judge orders the two ideas the same way. Pairs the judges disagree on are
**marked, not dropped** by default: dropping them would let the evaluation judge choose
the training data, and a model tuned on it could then no longer be evaluated by that
judge independently (the point of having two). ``drop_disagreeing`` drops them anyway;
every line then says ``filtered_by_evaluation_judge`` and ``popcorn tune`` records it.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmpopcorn.core.copycheck import normalise_title
from llmpopcorn.core.errors import InputError

#: pairs whose reward scores differ by less are left out (log2 comments; 0.2 = 15 %)
MIN_MARGIN = 0.2
FORMAT = "trl-dpo-conversational"


def candidates(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Distinct ideas per query from the finished items' records (their final idea, and
    every round of a refinement), with where each came from."""
    from llmpopcorn.pipeline.report import load_record

    by_query: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen: dict[str, set[str]] = defaultdict(set)
    for item in items:
        if item.get("status") != "ok" or not item.get("run_dir"):
            continue
        try:
            record = load_record(Path(item["run_dir"]))
        except (OSError, ValueError):
            continue
        labels = item.get("labels") or {}
        source = {
            "run_id": record.run_id,
            "mode": labels.get("mode", record.mode),
            "seed": record.seed,
            "variant": labels.get("variant"),
            "refs": labels.get("refs"),
        }
        ideas = [(record.idea, dict(source, round=None))]
        if record.refinement is not None:
            ideas = [(r.idea, dict(source, round=r.round)) for r in record.refinement.rounds]
        category = (record.category or {}).get("name") or ""
        for idea, where in ideas:
            key = normalise_title(idea.title) if idea is not None else ""
            if not key or key in seen[record.query]:
                continue
            seen[record.query].add(key)
            by_query[record.query].append({"idea": idea, "category": category, "source": where})
    return by_query


def preference_pairs(
    items: list[dict[str, Any]],
    judges: Any,
    *,
    min_margin: float = MIN_MARGIN,
    drop_disagreeing: bool = False,
) -> Iterator[dict[str, Any]]:
    """One TRL DPO line per pair of ideas of a query (see the module docstring)."""
    from llmpopcorn.enhance.prompts import BasicPromptBuilder

    if min_margin < 0:
        raise InputError(f"--min-margin must be 0 or more, got {min_margin}", "e.g. 0.2")
    names = judges.describe()
    builder = BasicPromptBuilder()
    for query, found in sorted(candidates(items).items()):
        if len(found) < 2:
            continue
        for c in found:
            judged = judges.score(c["idea"], query=query, category=c["category"])
            c["reward"] = judged.reward.log2_comments
            c["evaluation"] = judged.evaluation.log2_comments
        prompt = [m.model_dump() for m in builder.build(query).messages]
        for a, b in itertools.combinations(found, 2):
            chosen, rejected = (a, b) if a["reward"] >= b["reward"] else (b, a)
            margin = chosen["reward"] - rejected["reward"]
            if margin < min_margin or margin == 0:
                continue
            agree = chosen["evaluation"] > rejected["evaluation"]
            if drop_disagreeing and not agree:
                continue
            yield {
                "prompt": prompt,
                "chosen": [_answer(chosen["idea"])],
                "rejected": [_answer(rejected["idea"])],
                "margin": round(margin, 4),
                "chosen_scores": _scores(chosen),
                "rejected_scores": _scores(rejected),
                "judges_agree": agree,
                "filtered_by_evaluation_judge": drop_disagreeing,
                "reward_judge": names["reward"]["predictor"],
                "evaluation_judge": names["evaluation"]["predictor"],
                "query": query,
                "category": chosen["category"],
                "chosen_source": chosen["source"],
                "rejected_source": rejected["source"],
            }


def _answer(idea: Any) -> dict[str, str]:
    return {
        "role": "assistant",
        "content": json.dumps(idea.model_dump(exclude_none=True), ensure_ascii=False),
    }


def _scores(c: dict[str, Any]) -> dict[str, float]:
    return {"reward": c["reward"], "evaluation": c["evaluation"]}


def pairs_summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts for the command's closing line: pairs, queries, judges' agreement."""
    agree = sum(1 for line in lines if line["judges_agree"])
    return {
        "pairs": len(lines),
        "queries": len({line["query"] for line in lines}),
        "judges_agree": agree,
        "judges_disagree": len(lines) - agree,
    }
