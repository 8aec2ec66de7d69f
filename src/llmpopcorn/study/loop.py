"""The study's loop arm: every arm's gain over basic under the reward judge and under the
evaluation judge, side by side (``popcorn bench --arms basic,pe,refine``).

The refinement arm (``refine``: basic mode plus ``--refine K`` rounds, see
:mod:`llmpopcorn.pipeline.refine`) keeps, each round, the idea the **reward** judge scores
highest. Its gain measured by that same judge is partly the loop's own doing; the
**evaluation** judge, trained on the other half of the judge part and never consulted by
the loop, measures it again. ``reward - evaluation`` per cell, compared with basic's,
is the measured reward hacking: the part of the gain only the optimised judge sees.

Every finished cell of every arm is scored by both judges (:func:`add_loop_scores`, from
its saved record), and the comparisons are the study's own
(:func:`llmpopcorn.study.stats.arm_vs_control`: queries as the unit, seeds averaged within
a query, bootstrap intervals, Wilcoxon p adjusted with Holm within each family) with the
study's attrition table. Nothing here is a second copy of those statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmpopcorn.study.stats import ADJUSTMENT_TEXT, CONTROL, arm_vs_control

REWARD = "reward_log2"
EVALUATION = "evaluation_log2"
HACK = "reward_minus_evaluation"


def add_loop_scores(rows: list[dict[str, Any]], settings: Any) -> dict[str, Any]:
    """Add both loop judges' scores (:data:`REWARD`, :data:`EVALUATION`, :data:`HACK`) to
    every finished row, from its record (the idea and the run's category); return which
    judges they are and their independence. A refined row also gets how many videos shown
    to the LLM during refinement sit in the evaluation judge's memory (0 by construction)."""
    from llmpopcorn.pipeline.core import judge_memory
    from llmpopcorn.pipeline.refine import loop_judges
    from llmpopcorn.pipeline.report import load_record

    judges = loop_judges(settings)
    evaluation_memory = judge_memory(judges.evaluation) or set()
    shown_total = shown_known = 0
    for row in rows:
        if row.get("status") != "ok" or not row.get("run_dir"):
            continue
        try:
            record = load_record(Path(row["run_dir"]))
        except (OSError, ValueError):
            continue
        if record.idea is None:
            continue
        category = (record.category or {}).get("name") or row.get("category") or ""
        judged = judges.score(record.idea, query=record.query, category=category)
        row[REWARD] = judged.reward.log2_comments
        row[EVALUATION] = judged.evaluation.log2_comments
        row[HACK] = row[REWARD] - row[EVALUATION]
        if record.refinement is not None:
            shown = {
                str(n["video_id"])
                for step in record.refinement.rounds
                for n in (step.reward or {}).get("neighbours") or []
            }
            shown_total += len(shown)
            shown_known += len(shown & evaluation_memory)
            row["refine_rounds_failed"] = sum(
                1 for r in record.refinement.rounds if r.round and r.idea is None
            )
    return {
        "judges": judges.describe(),
        "independence": judges.independence(getattr(settings, "data_dir", None)),
        "refine_shown_videos": shown_total,
        "refine_shown_in_evaluation_memory": shown_known,
    }


def loop_summary(
    rows: list[dict[str, Any]],
    info: dict[str, Any],
    *,
    rounds: int,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per arm x LLM x video x query set: the gain over basic under the reward judge, under
    the evaluation judge, and of their difference (each a Holm-adjusted family)."""
    families = {
        name: arm_vs_control(rows, control=CONTROL, score=score, n_boot=n_boot, seed=seed)
        for name, score in (("reward", REWARD), ("evaluation", EVALUATION), ("hacking", HACK))
    }
    keyed = {
        name: {(r["llm"], r["arm"], r["video"], r["queries"]): r for r in found}
        for name, found in families.items()
    }
    side_by_side = []
    for key, reward in keyed["reward"].items():
        evaluation = keyed["evaluation"].get(key, {})
        hacking = keyed["hacking"].get(key, {})
        side_by_side.append(
            {
                "llm": key[0],
                "arm": key[1],
                "video": key[2],
                "queries": key[3],
                "pairs": reward["pairs"],
                "reward": _brief(reward),
                "evaluation": _brief(evaluation),
                "reward_minus_evaluation": _brief(hacking),
            }
        )
    failed_rounds = sum(int(r.get("refine_rounds_failed") or 0) for r in rows)
    return {
        "rounds": rounds,
        "rows": side_by_side,
        "families": {
            "method": ADJUSTMENT_TEXT,
            "note": "three families (reward, evaluation, difference), each over every arm x "
            "LLM x video x query set",
        },
        "refine_rounds_without_a_valid_idea": failed_rounds,
        **info,
    }


def _brief(c: dict[str, Any]) -> dict[str, Any]:
    keys = ("mean_gain_log2", "ci95", "win_rate", "wilcoxon_p", "p_adjusted")
    return {k: c.get(k) for k in keys}


# -- the report's tables ---------------------------------------------------------------


def loop_tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, header, rows, note) for :func:`llmpopcorn.study.report.tables`."""
    loop = summary.get("loop")
    if not loop:
        return []

    def gain(c: dict[str, Any]) -> str:
        value = c.get("mean_gain_log2")
        if value is None:
            return "n/a"
        ci = c.get("ci95")
        interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
        p = c.get("p_adjusted")
        return f"{value:+.3f}{interval} (p adj {'n/a' if p is None else f'{p:.3g}'})"

    judges = loop.get("judges") or {}
    overlap = (loop.get("independence") or {}).get("ids") or {}
    body = [
        [r["llm"], r["arm"], r["video"], r["queries"], str(r["pairs"]), gain(r["reward"]),
         gain(r["evaluation"]), gain(r["reward_minus_evaluation"])]
        for r in loop["rows"]
    ]  # fmt: skip
    note = (
        f"Reward judge: {judges.get('reward', {}).get('predictor')} (the refine arm keeps the "
        f"idea it scores highest, {loop['rounds']} round(s)); evaluation judge: "
        f"{judges.get('evaluation', {}).get('predictor')} (never consulted by the loop). "
        "Shared training videos: reward/evaluation "
        f"{overlap.get('reward_and_evaluation')}, reward/references "
        f"{overlap.get('reward_and_references')}, evaluation/references "
        f"{overlap.get('evaluation_and_references')}; videos shown to the LLM while refining "
        f"that the evaluation judge remembers: {loop.get('refine_shown_in_evaluation_memory')} "
        f"of {loop.get('refine_shown_videos')}. Refinement rounds without a valid idea: "
        f"{loop.get('refine_rounds_without_a_valid_idea')}. The study's own judge column "
        "above comes from a model trained on the whole judge part, reward half included, so "
        "for the refine arm only the evaluation judge is independent. "
        f"p adjusted with {loop['families']['method']} within each column's family."
    )
    return [
        (
            "Loop arms: gain over basic under the reward judge and under the evaluation judge "
            "(log2 comments, paired by query; the difference is the measured reward hacking)",
            ["llm", "arm", "video", "queries", "pairs (queries)", "reward judge",
             "evaluation judge", "reward - evaluation"],
            body,
            note,
        )
    ]  # fmt: skip
