"""The two judges of the optimisation loops: one rewards, the other evaluates.

Refinement, preference pairs and tuning all push ideas toward what a judge likes. An
idea tuned against one predictor looks better to that predictor, and maybe to nothing
else (reward hacking). So the loops use two judges trained with the same recipe on
disjoint halves of the corpus' judge part (:mod:`llmpopcorn.corpus.partition`):

* the **reward** judge (``models/reward``, the ``reward`` half) is the only one a loop
  ranks, keeps or prefers ideas by;
* the **evaluation** judge (``models/evaluation``, the ``evaluation`` half) never steers
  anything: it reports every gain a second time. A gain the reward judge sees and the
  evaluation judge does not is the measured reward hacking.

Both halves lie inside the judge part, so neither judge remembers a PE reference (those
come from the reference pool, which also leaves out every title of the judge part).
:meth:`LoopJudges.independence` checks all three pairs by video id and by normalised title
(near-identical reposts of a title can sit in different parts: ids alone would hide them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmpopcorn.core.types import Idea, Score

#: the shipped models under ``predict/models`` and the corpus part each was trained on
REWARD_MODEL = "reward"
EVALUATION_MODEL = "evaluation"
ROLES = ("reward", "evaluation")


@dataclass
class JudgedIdea:
    """Both judges' scores of one idea."""

    reward: Score
    evaluation: Score

    def brief(self) -> dict[str, Any]:
        """What a record or a pairs file keeps: each judge's name, value and interval."""
        return {role: score_brief(getattr(self, role)) for role in ROLES}


def score_brief(score: Score) -> dict[str, Any]:
    return {
        "predictor": score.predictor,
        "log2_comments": score.log2_comments,
        "interval": list(score.interval) if score.interval else None,
        "category": score.category,
    }


class LoopJudges:
    """A reward judge and an evaluation judge (two scorers with ``score(idea, ...)``)."""

    def __init__(self, reward: Any, evaluation: Any):
        self.reward = reward
        self.evaluation = evaluation
        self._overlap: dict[str, dict[str, Any]] = {}

    @classmethod
    def load(
        cls,
        settings: Any = None,
        *,
        reward: str | Path = REWARD_MODEL,
        evaluation: str | Path = EVALUATION_MODEL,
    ) -> LoopJudges:
        """The shipped reward and evaluation judges (or the model folders named)."""
        from llmpopcorn.predict.scorer import PopularityScorer, resolve_model_dir

        def scorer(model: str | Path) -> PopularityScorer:
            return PopularityScorer(
                resolve_model_dir(model),
                data_dir=getattr(settings, "data_dir", None),
                category_match=getattr(settings, "category_match", "centroid"),
                min_category_size=getattr(settings, "min_category_size", 50),
            )

        return cls(scorer(reward), scorer(evaluation))

    def score(self, idea: Idea, *, query: str | None = None, category: str = "") -> JudgedIdea:
        """Both judges' scores of ``idea`` in the run's ``category``."""
        return JudgedIdea(
            reward=self.reward.score(idea, query=query, category=category),
            evaluation=self.evaluation.score(idea, query=query, category=category),
        )

    def describe(self) -> dict[str, Any]:
        """Which judge rewarded and which evaluated (name, corpus part, rows)."""
        out: dict[str, Any] = {}
        for role in ROLES:
            judge = getattr(self, role)
            info = judge.describe() if hasattr(judge, "describe") else {}
            out[role] = {
                "predictor": getattr(judge, "name", type(judge).__name__),
                "part": info.get("part", getattr(judge, "part", "all")),
                "trained_rows": info.get("trained_rows"),
            }
        out["roles"] = (
            "the reward judge ranks and keeps ideas; the evaluation judge only reports "
            "(the loop never reads it)"
        )
        return out

    def independence(self, data_dir: str | Path | None = None) -> dict[str, Any]:
        """Overlap between what the reward judge learned from, what the evaluation judge
        learned from and PE's reference part: by video id (their retrieval memories) and,
        with the corpus, by normalised title over the whole corpus part each was trained
        on (validation and test rows included). Computed once per corpus."""
        key = str(data_dir or "")
        if key not in self._overlap:
            self._overlap[key] = memory_overlap(
                _memory(self.reward),
                _memory(self.evaluation),
                parts=(_part(self.reward), _part(self.evaluation)),
                data_dir=data_dir,
            )
        return self._overlap[key]


def _memory(scorer: Any) -> list[str]:
    ids = scorer.memory_ids() if hasattr(scorer, "memory_ids") else []
    return [str(v) for v in ids]


def _part(scorer: Any) -> str:
    return str(getattr(scorer, "part", "all"))


def memory_overlap(
    reward_ids: list[str],
    evaluation_ids: list[str],
    *,
    parts: tuple[str, str] = ("reward", "evaluation"),
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Shared video ids between the two memories and the reference part, and (with
    ``data_dir``) shared normalised titles between the corpus parts the judges were
    trained on (``parts``) and the reference pool (the reference part less its titles
    shared with the judge part: what PE and refinement show, see
    :func:`llmpopcorn.corpus.partition.in_pool`)."""
    from llmpopcorn.corpus.partition import in_part

    reward, evaluation = set(reward_ids), set(evaluation_ids)
    out: dict[str, Any] = {
        "parts": {"reward": parts[0], "evaluation": parts[1], "references": "reference pool"},
        "ids": {
            "reward_memory": len(reward),
            "evaluation_memory": len(evaluation),
            "reward_and_evaluation": len(reward & evaluation),
            "reward_and_references": int(in_part(sorted(reward), "reference").sum()),
            "evaluation_and_references": int(in_part(sorted(evaluation), "reference").sum()),
        },
        "titles": None,
    }
    if data_dir is None:
        out["titles_note"] = "not checked: no corpus (--data) to read titles from"
        return out
    from llmpopcorn.corpus.partition import part_titles, pool_titles
    from llmpopcorn.corpus.table import load_corpus

    frame = load_corpus(data_dir).frame
    r, e = (part_titles(frame, part) for part in parts)
    ref = pool_titles(frame, "reference")
    out["titles"] = {
        "reward_and_evaluation": len(r & e),
        "reward_and_references": len(r & ref),
        "evaluation_and_references": len(e & ref),
        "distinct": {"reward": len(r), "evaluation": len(e), "references": len(ref)},
    }
    out["titles_note"] = (
        "distinct normalised titles found in both: the corpus is split by video id, so one "
        "title posted as two videos can land in the reward and the evaluation half; the "
        "reference pool leaves out every title of the judge part"
    )
    return out
