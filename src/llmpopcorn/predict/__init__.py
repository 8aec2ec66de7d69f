"""Popularity prediction: MMRA-style retrieval-augmented regression on MicroLens.

Light at import: torch and the embedders load only when a model is fitted or text is
embedded. See :func:`load_scorer` (used by the pipeline's score stage),
:mod:`.train` (train and evaluate every model on one seeded split) and
:mod:`.metrics` (nMSE, MAE, SRC; global and batched).
"""

from __future__ import annotations

from llmpopcorn.predict.base import MODELS, Predictor, load_model, model_class
from llmpopcorn.predict.data import Table, load_table, split_indices
from llmpopcorn.predict.metrics import regression_report
from llmpopcorn.predict.scorer import DEFAULT_MODEL, PopularityScorer, load_scorer

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "PopularityScorer",
    "Predictor",
    "Table",
    "load_model",
    "load_scorer",
    "load_table",
    "model_class",
    "regression_report",
    "split_indices",
]
