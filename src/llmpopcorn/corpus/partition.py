"""A deterministic split of the corpus by video id: a *judge* part and a *reference* part.

The judge must be independent of what it judges (DESIGN §1.4): in the study, PE draws
its reference videos only from the reference part, and the judging predictor is trained
only on the judge part, so no reference can sit in the judge's retrieval memory. The
original study drew PE's references from MMRA's test split, disjoint from the
predictor's training data; this is the same idea for any corpus.

A video's part depends only on its id (a salted SHA-256), never on row order, so the
split is stable when rows are added, removed or reordered, and a model file can record
the scheme it was trained under (:func:`describe`).

The judge part is split once more, by a second salt, into a *reward* half and an
*evaluation* half for the optimisation loops (refinement, preference pairs, tuning): the
loop ranks ideas with a judge trained on the reward half only, and every gain is also
reported by a judge trained on the evaluation half only, which the loop never saw. Both
halves lie inside the judge part, so neither judge's memory holds a PE reference.

Ids alone do not make the parts independent: one title posted as two videos can land in
both (91 of the 5,153 reference-part MicroLens videos share a normalised title with a
judge-part video). The *reference pool* (:func:`in_pool`, what PE, refinement and the
human baseline draw from) is therefore the reference part less every video whose
normalised title occurs in the judge part: those duplicates count with the judge part
and are never shown as references. The judge part, and so every judge trained on it or
on one of its halves, is unchanged; a judge trained on a part is disjoint from the pool
by id and by normalised title by construction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from llmpopcorn.core.errors import ConfigError

#: share of videos in the reference part (PE's pool in the study)
REFERENCE_SHARE = 0.3
SALT = "llmpopcorn-partition-v1"
#: share of the judge part that goes to the reward judge (the rest: the evaluation judge)
REWARD_SHARE = 0.5
LOOP_SALT = "llmpopcorn-loop-judges-v1"
#: the halves of the judge part (reward judge / evaluation judge)
LOOP_PARTS = ("reward", "evaluation")
PARTS = ("all", "judge", "reference", *LOOP_PARTS)
SCHEME = f"sha256({SALT}:video_id) < {REFERENCE_SHARE} -> reference, else judge"
LOOP_SCHEME = (
    f"judge part; sha256({LOOP_SALT}:video_id) < {REWARD_SHARE} -> reward, else evaluation"
)
#: the reference pool (PE's ``--pe-pool reference``), see :func:`reference_pool`
POOL_RULE = (
    "the reference part less every video whose normalised title (core.copycheck."
    "normalise_title) occurs in the judge part"
)
#: the pools PE may draw from
POOLS = ("all", "reference")


def _unit(video_id: str, salt: str = SALT) -> float:
    digest = hashlib.sha256(f"{salt}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def part_of(video_id: str) -> str:
    """``"reference"`` or ``"judge"`` for one video id."""
    return "reference" if _unit(str(video_id).strip()) < REFERENCE_SHARE else "judge"


def loop_part_of(video_id: str) -> str | None:
    """``"reward"`` or ``"evaluation"`` for a video of the judge part, None for a reference."""
    vid = str(video_id).strip()
    if part_of(vid) != "judge":
        return None
    return "reward" if _unit(vid, LOOP_SALT) < REWARD_SHARE else "evaluation"


def check_part(part: str) -> str:
    if part not in PARTS:
        raise ConfigError(f"unknown corpus part '{part}'", f"use one of: {', '.join(PARTS)}")
    return part


def in_part(video_ids: Iterable[Any], part: str) -> np.ndarray:
    """A boolean mask: which of ``video_ids`` belong to ``part`` (``"all"``: every one)."""
    check_part(part)
    ids = [str(v) for v in video_ids]
    if part == "all":
        return np.ones(len(ids), dtype=bool)
    if part in LOOP_PARTS:
        return np.array([loop_part_of(v) == part for v in ids], dtype=bool)
    return np.array([part_of(v) == part for v in ids], dtype=bool)


def describe(part: str = "all") -> dict[str, Any]:
    """What a model or a run records about the part it used (the reference part as a
    pool: the rule that drops its titles shared with the judge part)."""
    out = {"part": check_part(part), "scheme": SCHEME, "reference_share": REFERENCE_SHARE}
    if part == "reference":
        out["pool"] = POOL_RULE
    if part in LOOP_PARTS:
        out.update(loop_scheme=LOOP_SCHEME, reward_share=REWARD_SHARE)
    return out


def corpus_share(part: str) -> float:
    """The expected share of the whole corpus that ``part`` holds."""
    judge = 1 - REFERENCE_SHARE
    return {
        "all": 1.0,
        "judge": judge,
        "reference": REFERENCE_SHARE,
        "reward": judge * REWARD_SHARE,
        "evaluation": judge * (1 - REWARD_SHARE),
    }[check_part(part)]


def part_titles(frame: Any, part: str = "all") -> set[str]:
    """The distinct normalised titles (:func:`~llmpopcorn.core.copycheck.normalise_title`)
    of the corpus rows in ``part``: what an independence check by content compares with
    (the corpus is split by id, so one title posted as two videos can sit in two parts)."""
    mask = in_part(frame["video_id"].astype(str), part)
    return {t for t in _normalised_titles(frame)[mask] if t}


def _normalised_titles(frame: Any) -> np.ndarray:
    from llmpopcorn.core.copycheck import normalise_title

    return np.array([normalise_title(t) for t in frame["title_en"].astype(str)], dtype=object)


def reference_pool(frame: Any) -> np.ndarray:
    """A boolean mask over ``frame``'s rows: the reference pool, i.e. the reference part
    less every video whose normalised title occurs in the judge part (:data:`POOL_RULE`).
    The one definition PE, refinement, the human baseline and the overlap checks use."""
    reference = in_part(frame["video_id"].astype(str), "reference")
    titles = _normalised_titles(frame)
    judge_titles = {t for t in titles[~reference] if t}
    shared = np.fromiter((t in judge_titles for t in titles), dtype=bool, count=len(titles))
    return reference & ~shared


def in_pool(frame: Any, pool: str) -> np.ndarray:
    """Which rows of ``frame`` a reference may be drawn from: ``"all"`` every row,
    ``"reference"`` the reference pool (:func:`reference_pool`)."""
    if pool not in POOLS:
        raise ConfigError(f"unknown reference pool '{pool}'", f"use one of: {', '.join(POOLS)}")
    if pool == "all":
        return np.ones(len(frame), dtype=bool)
    return reference_pool(frame)


def pool_titles(frame: Any, pool: str) -> set[str]:
    """The distinct normalised titles of the rows in ``pool``."""
    return {t for t in _normalised_titles(frame)[in_pool(frame, pool)] if t}
