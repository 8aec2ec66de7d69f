"""A deterministic split of the corpus by video id: a *judge* part and a *reference* part.

The judge must be independent of what it judges (DESIGN §1.4): in the study, PE draws
its reference videos only from the reference part, and the judging predictor is trained
only on the judge part, so no reference can sit in the judge's retrieval memory. The
original study drew PE's references from MMRA's test split, disjoint from the
predictor's training data; this is the same idea for any corpus.

A video's part depends only on its id (a salted SHA-256), never on row order, so the
split is stable when rows are added, removed or reordered, and a model file can record
the scheme it was trained under (:func:`describe`).
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
PARTS = ("all", "judge", "reference")
SCHEME = f"sha256({SALT}:video_id) < {REFERENCE_SHARE} -> reference, else judge"


def _unit(video_id: str) -> float:
    digest = hashlib.sha256(f"{SALT}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def part_of(video_id: str) -> str:
    """``"reference"`` or ``"judge"`` for one video id."""
    return "reference" if _unit(str(video_id).strip()) < REFERENCE_SHARE else "judge"


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
    return np.array([part_of(v) == part for v in ids], dtype=bool)


def describe(part: str = "all") -> dict[str, Any]:
    """What a model or a run records about the part it used."""
    return {"part": check_part(part), "scheme": SCHEME, "reference_share": REFERENCE_SHARE}
