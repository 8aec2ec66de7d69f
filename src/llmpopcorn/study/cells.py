"""What the study keeps of each cell: the row its statistics read.

A finished cell (:func:`cell_result`) keeps its title and score, who ideated it (the
backend, its model, whether it is a language model), what the judge read, why replies
were re-asked on the way, and how independent the judge is of the references PE showed:
by video id (the judge's retrieval memory), by normalised title and as near-duplicates
(:mod:`llmpopcorn.corpus.independence`). A failed cell
(:func:`failed_result`) keeps the same names and why it failed, so a study whose every
cell failed still says which LLM and model it asked.

Why a reply or a cell failed comes from the record fields ``Attempt.reason`` and
``RunRecord.failure`` (the team's agreed vocabulary: parse, copy, duplicate, truncated,
timeout, refused, error; render, score, setup, interrupted); records written before those
fields existed are classified from their error text (:func:`classify_error`).
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import PopcornError

log = logging.getLogger(__name__)

#: error text -> reason, first match wins (records without ``reason`` / ``failure``)
_PATTERNS = (
    ("copy", re.compile(r"copies the title of reference", re.I)),
    ("duplicate", re.compile(r"almost the same as another variant", re.I)),
    ("truncated", re.compile(r"truncat|finish_reason\W*length|cut off", re.I)),
    ("timeout", re.compile(r"timed? ?out|no answer from .* within", re.I)),
    ("refused", re.compile(r"refus|content[ _]filter|content policy|safety system", re.I)),
)
_NO_VALID_IDEA = re.compile(r"gave no valid idea.*?last problem:\s*(.*)", re.I | re.S)


def classify_error(text: str | None, default: str = "error") -> str:
    """A reason from an error message (see the module docstring); its hint, which names
    options such as --llm-timeout whatever the error, is not read."""
    text = (text or "").split(" (hint: ", 1)[0]
    for reason, pattern in _PATTERNS:
        if text and pattern.search(text):
            return reason
    return default


def attempt_reason(attempt: Any) -> str | None:
    """Why one reply was rejected (``None``: it was valid). A rejected reply with no
    recorded reason failed the schema or the JSON parse unless its text says otherwise."""
    reason = getattr(attempt, "reason", None)
    if reason:
        return str(reason)
    error = getattr(attempt, "error", None)
    return classify_error(error, default="parse") if error else None


def failure_of(record: Any, error: str | None = None) -> str:
    """Why a failed run failed: ``record.failure`` when recorded, else from the error
    text, its last attempt and how far the run got."""
    reason = getattr(record, "failure", None)
    if reason:
        return str(reason)
    text = error or getattr(record, "error", None) or ""
    last = _NO_VALID_IDEA.search(text)
    if last:  # every attempt was rejected: the last one's reason
        attempts = list(getattr(record, "attempts", None) or [])
        return (attempt_reason(attempts[-1]) if attempts else None) or classify_error(
            last.group(1), default="parse"
        )
    reason = classify_error(text)
    if reason != "error" or getattr(record, "idea", None) is None:
        return reason
    # an idea was made: rendering or scoring failed
    rendered = any(a.kind == "clip" for a in getattr(record, "artifacts", None) or [])
    render = bool((getattr(record, "settings", None) or {}).get("render"))
    return "render" if render and not rendered else "score"


def _llm_names(record: Any) -> dict[str, Any]:
    llm = (getattr(record, "backends", None) or {}).get("llm")
    settings = getattr(record, "settings", None) or {}
    return {
        "is_llm": llm.is_llm if llm else None,
        "ideator": llm.name if llm else settings.get("llm"),
        "ideator_model": llm.model if llm else settings.get("llm_model"),
    }


def _category(record: Any) -> str | None:
    if record.enhancement and record.enhancement.get("categories"):
        return record.enhancement["categories"][0].get("name")
    if isinstance(getattr(record, "category", None), dict):
        return record.category.get("name")
    if record.score is not None:
        return record.score.category
    return None


def _attempts(record: Any) -> dict[str, Any]:
    attempts = list(getattr(record, "attempts", None) or [])
    reasons = [attempt_reason(a) for a in attempts]
    return {"attempts": len(attempts), "attempt_reasons": [r for r in reasons if r]}


def failed_result(record: Any, error: str | None = None) -> dict[str, Any]:
    """What the summary keeps of a failed cell: who was asked, why it failed."""
    return {
        "title": record.idea.title if getattr(record, "idea", None) else None,
        "log2_comments": None,
        "category": _category(record),
        **_llm_names(record),
        **_attempts(record),
        "failure": failure_of(record, error),
        "refs_shown": len(getattr(record, "references", None) or []),
        "pe_pool": (record.settings or {}).get("pe_pool") if record.mode == "pe" else None,
    }


def judge_reads(score: Any) -> list[str] | None:
    """What the judge read for a score: idea fields, the category, the clip (``None``
    when the predictor does not say)."""
    inputs = (getattr(score, "extra", None) or {}).get("inputs")
    if not isinstance(inputs, dict):
        return None
    reads = sorted(inputs.get("fields") or [])
    if inputs.get("category"):
        reads.append("category")
    if inputs.get("visual"):
        reads.append("clip")
    return reads


@functools.lru_cache(maxsize=4)
def _corpus_at(path: str, stamp: int) -> Any:
    from llmpopcorn.corpus.table import load_corpus

    return load_corpus(path)


def _corpus_and_index(pipeline: Any) -> tuple[Any, Any]:
    """The corpus PE drew from and its embedding index (PE's prompt builder), else the
    corpus of the data setting without an index, else (None, None)."""
    builder = getattr(pipeline, "prompt_builder", None)
    corpus = getattr(builder, "corpus", None)
    if corpus is not None:
        return corpus, getattr(builder, "index", None)
    data = getattr(pipeline.settings, "data_dir", None)
    if data is None:
        return None, None
    from llmpopcorn.corpus.table import resolve_corpus_path

    try:
        path = Path(resolve_corpus_path(data))
        return _corpus_at(str(path), path.stat().st_mtime_ns), None
    except (PopcornError, OSError) as exc:
        log.warning("no title overlap check: %s", exc)
        return None, None


def independence(record: Any, pipeline: Any) -> dict[str, Any]:
    """How many of the references shown to the ideator the judge already knows
    (:func:`llmpopcorn.corpus.independence.reference_overlap`): by id (its retrieval
    memory; without one, the corpus part it was trained on), by normalised title and as
    near-duplicates of a video it learned from."""
    from llmpopcorn.corpus.independence import judge_data, reference_overlap
    from llmpopcorn.pipeline.core import judge_memory

    refs = list(record.references)
    out: dict[str, Any] = {"refs_shown": len(refs), "refs_in_judge_memory": 0,
                           "refs_title_in_judge_data": 0, "refs_near_judge_data": 0,
                           "overlap_method": None}  # fmt: skip
    if not refs:
        return out
    try:
        scorer = pipeline.scorer
    except PopcornError:
        scorer = None
    unknown = dict.fromkeys(("refs_in_judge_memory", "refs_title_in_judge_data",
                             "refs_near_judge_data"))  # fmt: skip
    if scorer is None:
        return out | unknown | {"overlap_method": "unknown (no judge)"}
    part = str(getattr(scorer, "part", "all"))
    memory = judge_memory(scorer)
    corpus, index = _corpus_and_index(pipeline)
    if corpus is None:  # ids only: the memory, else the part the judge was trained on
        from llmpopcorn.corpus.partition import in_part

        ids = [str(r.video_id) for r in refs]
        known = sum(v in memory for v in ids) if memory is not None else in_part(ids, part).sum()
        return out | unknown | {"refs_in_judge_memory": int(known),
                                "overlap_method": "ids only (no corpus)"}  # fmt: skip
    found = reference_overlap(refs, judge_data(corpus, part, memory), index=index)
    by_id = found["by_id"] if found["in_memory"] is None else found["in_memory"]
    return out | {
        "refs_in_judge_memory": by_id,
        "refs_title_in_judge_data": found["by_title"],
        "refs_near_judge_data": found["near_duplicates"],
        "overlap_method": found["method"],
    }


def cell_result(record: Any, pipeline: Any) -> dict[str, Any]:
    """What the summary keeps of a finished cell."""
    score = record.score
    return {
        "title": record.idea.title if record.idea else None,
        "log2_comments": score.log2_comments if score else None,
        "expected_comments": score.expected_comments if score else None,
        "interval": list(score.interval) if score and score.interval else None,
        "predictor": score.predictor if score else None,
        "judge_reads": judge_reads(score) if score else None,
        "category": _category(record),
        **_llm_names(record),
        **_attempts(record),
        "failure": None,
        **independence(record, pipeline),
        "pe_pool": (record.settings or {}).get("pe_pool") if record.mode == "pe" else None,
    }
