"""What a result depends on: the identity of a study cell or a batch item.

A cell's or an item's identity is every setting that changes its result
(:func:`cell_identity`: LLM backend, model and sampling; mode and, in PE mode, every PE
parameter; renderers and their options when rendering; the predictor's files; the corpus
file), so a rerun with other settings computes new results and a rerun with the same
settings reuses finished ones. Shared by batches (:mod:`llmpopcorn.runs.batch`) and the
study (:mod:`llmpopcorn.study.bench`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import DataError
from llmpopcorn.core.settings import Settings

#: settings that never change a result: where files go, how long to wait for a server,
#: how fast to call it, and how a finished run is packaged and signed
NOT_RESULT = frozenset(
    {
        "data_dir",
        "out_dir",
        "cache_dir",
        "llm_timeout",
        "llm_max_retries",
        "llm_api_key",
        "llm_rpm",
        "max_batch_llm_calls",
        "llm_deadline",
        "package",
        "c2pa_cert",
        "c2pa_key",
    }
)
#: settings read only in PE mode (dropped from a basic cell's identity, so basic cells
#: are shared by every point of a --refs sweep). Not the category resolver's method and
#: minimum size: a basic run's category, which the judge scores with, comes from them
#: too (tests/test_study_identity.py checks both directions)
PE_ONLY = frozenset({"embedder", "embedder_model", "num_tags", "ratio", "n_refs", "pe_pool"})
#: settings read only when rendering
RENDER_ONLY = frozenset(
    {"image", "video", "image_options", "video_options", "video_from_cover", "device"}
)


def _sha256_files(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def predictor_identity(settings: Settings) -> dict[str, Any] | None:
    """The predictor's id and version: its folder name and a hash of its files."""
    if not settings.score:
        return None
    return model_identity(settings.predictor)


def model_identity(model: str | Path | None) -> dict[str, Any]:
    """A saved model's folder name and a hash of its files."""
    from llmpopcorn.predict.scorer import resolve_model_dir  # light: no torch

    path = resolve_model_dir(model)
    files = [
        p
        for p in path.iterdir()
        if p.is_file() and p.suffix in (".json", ".npz", ".safetensors", ".pt")
    ]
    return {"name": path.name, "sha256": _sha256_files(files)}


def corpus_identity(settings: Settings) -> str | None:
    """The corpus file's hash (``None`` without a data folder)."""
    if settings.data_dir is None:
        return None
    from llmpopcorn.corpus.table import file_sha256, resolve_corpus_path

    try:
        path = resolve_corpus_path(settings.data_dir)
    except DataError:
        return None
    return file_sha256(path) if path.exists() else None


def cell_identity(
    settings: Settings,
    *,
    llm_model: str | None,
    predictor: dict[str, Any] | None,
    corpus_sha256: str | None,
) -> dict[str, Any]:
    """Every setting that changes a cell's result (see the module docstring). Fields
    added to :class:`Settings` later are included unless listed as not mattering."""
    data = {k: v for k, v in settings.public().items() if k not in NOT_RESULT}
    if settings.mode != "pe":
        data = {k: v for k, v in data.items() if k not in PE_ONLY}
    if not settings.render:
        data = {k: v for k, v in data.items() if k not in RENDER_ONLY}
    data["predictor"] = predictor
    if (settings.mode == "pe" and settings.pe_pool == "reference") or settings.refine:
        # which videos the reference pool holds (PE's references, refinement's examples):
        # a cell made from an older pool is another cell
        from llmpopcorn.corpus.partition import POOL_RULE

        data["reference_pool"] = POOL_RULE
    if settings.refine:  # the refinement's reward judge chooses the idea
        from llmpopcorn.predict.judges import EVALUATION_MODEL, REWARD_MODEL

        data["loop_judges"] = [model_identity(m) for m in (REWARD_MODEL, EVALUATION_MODEL)]
    data["llm_model_id"] = llm_model
    data["corpus_sha256"] = corpus_sha256
    return data


def item_settings(settings: Settings) -> Settings:
    """What each item runs with: one idea per item (a batch's variants are items)."""
    return settings.model_copy(update={"variants": 1})


def identity_of(settings: Settings, llm_model: str | None) -> dict[str, Any]:
    return cell_identity(
        settings,
        llm_model=llm_model,
        predictor=predictor_identity(settings),
        corpus_sha256=corpus_identity(settings),
    )


def result_settings(settings: Settings) -> dict[str, Any]:
    """The settings a resumed batch must reuse (everything that changes a result)."""
    return {k: v for k, v in settings.public().items() if k not in NOT_RESULT}
