"""Judge-guided refinement (the paper's future work): after the first idea, the LLM sees
what a popularity judge predicts for it, and why, and writes an improved idea.

Round 0 is the run's first idea (:meth:`Pipeline.ideate`). In each of K rounds the LLM
gets the original prompt, its best idea so far as its own answer, and a message with the
**reward judge**'s prediction for it (comments, 80 % interval, percentile in the
category), the judge's explanation (the nearest videos of its memory that drove the
prediction, with their comment counts) and a few popular and unpopular videos of the
category (PE's own references when the run has them, else the corpus' reference pool),
then writes an improved idea (validated, re-asked when it copies a title shown or repeats
an earlier round's). The idea the reward judge scores highest over all rounds is kept.

Every round is also scored by the **evaluation judge**, trained on the other half of the
judge part (:mod:`llmpopcorn.predict.judges`): it is never shown to the LLM and never
chooses, so a gain it does not confirm is reward hacking. The record keeps every round
with both judges' scores (``record.refinement``).

The offline stand-in is not a language model and cannot read the judge's explanation. It
refines honestly by search: each round it composes :data:`STANDIN_CANDIDATES` template
answers (other seeds, borrowing the structure of the popular videos shown) and the reward
judge picks the best; the record says so (``method``).
"""

from __future__ import annotations

import json
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmpopcorn.core.errors import InvalidReplyError
from llmpopcorn.core.types import Idea, Message, Prompt, Reference, Refinement, RefineRound

if TYPE_CHECKING:  # pragma: no cover
    from llmpopcorn.predict.judges import JudgedIdea, LoopJudges

#: a :class:`llmpopcorn.pipeline.core.Pipeline` (core imports this module, never the reverse)
Pipeline = Any

#: round k's seed is the run's seed + k * this (a stand-in's candidates add 0, 1, 2...)
ROUND_SEED_STRIDE = 1000
#: template answers the offline stand-in composes per round for the reward judge to rank
STANDIN_CANDIDATES = 6
NEIGHBOURS_SHOWN = 5
EXAMPLES_SHOWN = 3  # popular and as many unpopular
STANDIN_METHOD = (
    "offline stand-in (not an LLM): each round, the reward judge picks the best of "
    f"{STANDIN_CANDIDATES} template answers; the judge's explanation is not read"
)
LLM_METHOD = "the LLM rewrites its idea after seeing the reward judge's score and explanation"

_judges_lock = threading.Lock()
_score_lock = threading.Lock()  # the judges are used from one thread at a time


def loop_judges(settings: Any) -> LoopJudges:
    """The reward and evaluation judges, loaded once per process and settings."""
    key = (
        str(getattr(settings, "data_dir", None) or ""),
        getattr(settings, "category_match", "centroid"),
        int(getattr(settings, "min_category_size", 50)),
    )
    with _judges_lock:
        return _load_judges(*key)


@lru_cache(maxsize=4)
def _load_judges(data_dir: str, category_match: str, min_category_size: int) -> LoopJudges:
    from types import SimpleNamespace

    from llmpopcorn.predict.judges import LoopJudges

    settings = SimpleNamespace(
        data_dir=data_dir or None,
        category_match=category_match,
        min_category_size=min_category_size,
    )
    return LoopJudges.load(settings)


def refine(pipeline: Pipeline, record: Any, prompt: Prompt, rounds: int) -> Refinement:
    """Run ``rounds`` rounds on ``record`` (which holds the first idea), keep the best idea
    by the reward judge on the record, and save every round in ``record.refinement``."""
    judges = loop_judges(pipeline.settings)
    llm = pipeline.llm
    category = (record.category or {}).get("name") or ""
    first = RefineRound(round=0, idea=record.idea, seeds=[record.seed])
    _judge(first, judges, record, category)
    history = [first]
    examples, source = category_examples(record, pipeline.settings, category)
    messages_of = {0: list(record.messages)}
    for number in range(1, rounds + 1):
        best = max(history, key=_reward)
        started = time.perf_counter()
        asked = feedback_prompt(prompt, best, examples, category)
        step = RefineRound(round=number, candidates=1 if llm.is_llm else STANDIN_CANDIDATES)
        avoid = [r.idea.title for r in history if r.idea is not None]
        try:
            ideas = _ask(pipeline, asked, record.seed + number * ROUND_SEED_STRIDE, step, avoid)
        except InvalidReplyError as exc:
            step.error = str(exc)
            step.attempts += list(exc.attempts)
            ideas = []
        judged = [(idea, msgs, _score(judges, idea, record, category)) for idea, msgs in ideas]
        if judged:
            idea, msgs, scores = max(judged, key=lambda t: t[2].reward.log2_comments)
            step.idea = idea
            step.reward, step.evaluation = _briefs(scores)
            messages_of[number] = msgs
        step.seconds = round(time.perf_counter() - started, 4)
        history.append(step)
    kept = max(history, key=_reward)
    refinement = Refinement(
        rounds_asked=rounds,
        rounds=history,
        kept=kept.round,
        method=LLM_METHOD if llm.is_llm else STANDIN_METHOD,
        judges=judges.describe() | {"independence": judges.independence()},
        shown={
            "neighbours": "the reward judge's nearest memory videos (titles with --data)",
            "examples": len(examples),
            "examples_source": source,
        },
    )
    record.refinement = refinement
    if kept.round:
        record.idea = kept.idea
        record.messages = messages_of[kept.round]
        record.copy_check = _copy_report(record, examples, kept.idea)
    record.notes.append(refine_note(refinement))
    return refinement


def _reward(step: RefineRound) -> float:
    return step.reward["log2_comments"] if step.reward else float("-inf")


def _score(judges: LoopJudges, idea: Idea, record: Any, category: str) -> JudgedIdea:
    with _score_lock:
        return judges.score(idea, query=record.query, category=category)


def _briefs(scores: JudgedIdea) -> tuple[dict, dict]:
    brief = scores.brief()
    brief["reward"]["neighbours"] = [
        n.model_dump() for n in scores.reward.neighbours[:NEIGHBOURS_SHOWN]
    ]
    brief["reward"]["percentile"] = scores.reward.percentile
    return brief["reward"], brief["evaluation"]


def _judge(step: RefineRound, judges: LoopJudges, record: Any, category: str) -> None:
    if step.idea is not None:
        step.reward, step.evaluation = _briefs(_score(judges, step.idea, record, category))


def _ask(
    pipeline: Pipeline, prompt: Prompt, seed: int, step: RefineRound, avoid: list[str]
) -> list[tuple[Idea, list[Message]]]:
    """The round's answer(s): one LLM answer, or the stand-in's candidates."""
    from llmpopcorn.enhance.pe import CopyGuard
    from llmpopcorn.pipeline.ideate import ideate
    from llmpopcorn.pipeline.variants import variant_check

    out = []
    for j in range(step.candidates):
        check = variant_check(CopyGuard(prompt.references), avoid)
        step.seeds.append(seed + j)
        result = ideate(pipeline.llm, prompt, pipeline.sampling(seed + j), check=check)
        step.attempts += result.attempts
        out.append((result.idea, result.messages))
    return out


def feedback_prompt(
    prompt: Prompt, best: RefineRound, examples: list[Reference], category: str
) -> Prompt:
    """The original prompt, the best idea so far as the LLM's answer, then the judge's
    feedback (:file:`enhance/prompts/refine_user.txt`)."""
    from llmpopcorn.enhance.prompts import render

    idea, reward = best.idea, best.reward or {}
    assert idea is not None
    value = reward.get("log2_comments", 0.0)
    low_high = reward.get("interval")
    interval = (
        f"80 % interval {2 ** low_high[0]:.0f}-{2 ** low_high[1]:.0f} comments"
        if low_high
        else "no interval"
    )
    percentile = reward.get("percentile")
    neighbours = [Reference(**n) for n in reward.get("neighbours") or []]
    text = render(
        "refine_user.txt",
        category=category or "not known",
        title=idea.title,
        predicted=f"{2**value:.0f}",
        interval=interval,
        percentile=(
            f"That is higher than {percentile:.0f} % of the judge's videos of this category."
            if percentile is not None
            else ""
        ),
        neighbours=_lines(neighbours) or "- (none)",
        examples=_lines(examples) or "- (none: no corpus is set)",
    )
    answer = json.dumps(idea.model_dump(exclude_none=True), ensure_ascii=False)
    messages = [
        *prompt.messages,
        Message(role="assistant", content=answer),
        Message(role="user", content=text),
    ]
    shown = [*prompt.references, *neighbours, *examples]
    return prompt.model_copy(update={"messages": messages, "references": shown})


def _lines(refs: list[Reference]) -> str:
    out = []
    for r in refs:
        label = f"{r.label}, " if r.label != "neighbour" else ""
        title = r.title or f"video {r.video_id} (its title needs the corpus: --data)"
        count = "?" if r.comment_count is None else f"{r.comment_count:,}"
        out.append(f'- "{title}" ({label}{count} comments)')
    return "\n".join(out)


def category_examples(record: Any, settings: Any, category: str) -> tuple[list[Reference], str]:
    """A few popular and unpopular videos of the category: PE's own references when the
    run has them (nearest to the query), else the category's most and least commented
    videos of the corpus' reference pool (never a judge's part, by id or by title)."""
    pe = [r for r in record.references if r.label in ("popular", "unpopular")]
    if pe:
        popular = [r for r in pe if r.label == "popular"][:EXAMPLES_SHOWN]
        unpopular = [r for r in pe if r.label == "unpopular"][:EXAMPLES_SHOWN]
        return popular + unpopular, "PE's references of this run (the reference part)"
    data_dir = getattr(settings, "data_dir", None)
    if not data_dir or not category:
        return [], "none (no corpus set: only the judge's explanation)"
    return _reference_part_examples(str(Path(data_dir).expanduser().resolve()), category), (
        "the category's most and least commented videos of the corpus' reference part "
        "(its pool: no title shared with the judge part)"
    )


@lru_cache(maxsize=64)
def _reference_part_examples(data_dir: str, category: str) -> list[Reference]:
    from llmpopcorn.corpus.partition import in_pool
    from llmpopcorn.corpus.table import load_corpus

    frame = load_corpus(data_dir).frame
    rows = frame[(frame["partition"] == category) & in_pool(frame, "reference")]
    rows = rows.sort_values(["comment_count", "video_id"], ascending=[False, True])
    picked = [(r, "popular") for r in rows.head(EXAMPLES_SHOWN).itertuples()]
    picked += [(r, "unpopular") for r in rows.tail(EXAMPLES_SHOWN).itertuples()][::-1]
    return [
        Reference(
            video_id=str(r.video_id),
            title=str(r.title_en),
            category=category,
            comment_count=int(r.comment_count),
            label=label,
        )
        for r, label in picked
    ]


def _copy_report(record: Any, examples: list[Reference], idea: Idea) -> dict[str, Any]:
    from llmpopcorn.enhance.pe import CopyGuard

    shown = [*record.references, *examples]
    for step in record.refinement.rounds:
        shown += [Reference(**n) for n in (step.reward or {}).get("neighbours") or []]
    return CopyGuard(shown).report(idea)


def refine_note(refinement: Refinement) -> str:
    """One line for the record's notes: what was kept, by which judge, and what the
    evaluation judge said about the same change."""
    first, kept = refinement.rounds[0], refinement.rounds[refinement.kept]
    if first.reward is None or kept.reward is None:
        return f"Refinement: {refinement.rounds_asked} round(s); the first idea was not scored."
    gain = kept.reward["log2_comments"] - first.reward["log2_comments"]
    checked = (kept.evaluation or {}).get("log2_comments", 0.0) - (first.evaluation or {}).get(
        "log2_comments", 0.0
    )
    failed = sum(1 for r in refinement.rounds if r.round and r.idea is None)
    return (
        f"Refinement: {refinement.rounds_asked} round(s) ({failed} without a valid idea); kept "
        f"round {kept.round} by the reward judge ({refinement.judges['reward']['predictor']}): "
        f"{gain:+.2f} log2 comments over the first idea; the evaluation judge "
        f"({refinement.judges['evaluation']['predictor']}, never used to choose) says "
        f"{checked:+.2f}."
    )


def refinement_view(refinement: Refinement) -> dict[str, Any]:
    """A compact view for agents and pages: each round's title and both judges' values."""
    return {
        "kept": refinement.kept,
        "method": refinement.method,
        "reward_judge": refinement.judges.get("reward", {}).get("predictor"),
        "evaluation_judge": refinement.judges.get("evaluation", {}).get("predictor"),
        "rounds": [
            {
                "round": r.round,
                "title": r.idea.title if r.idea else None,
                "reward_log2": (r.reward or {}).get("log2_comments"),
                "evaluation_log2": (r.evaluation or {}).get("log2_comments"),
                "error": r.error,
            }
            for r in refinement.rounds
        ],
    }
