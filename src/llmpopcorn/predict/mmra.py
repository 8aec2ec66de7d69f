"""A retrieval-augmented attention regressor in the spirit of MMRA (SIGIR 2024).

For every row: retrieve the k most cosine-similar *training* videos by text
embedding (the row itself excluded), then combine

* the row's own content (its embedding, its category, optional visual features),
* the neighbours' content, labels and similarities, through attention whose query is
  the row's content and whose scores are biased by the retrieval similarity,
* two label aggregates: the attention-weighted and the softmax(similarity)-weighted
  neighbour labels (MMRA's retrieval label aggregation),
* optionally (``text_prior``) a lexical prior: the prediction of a hashed TF-IDF +
  category ridge, stacked (out-of-fold on the training rows, so the network never
  sees a prior fitted on the row it learns from),

and regress log2(comment_count) with a small MLP head, trained with MSE and Adam
and early-stopped on the validation set. Training uses torch; inference is a NumPy
re-implementation of the same forward pass, so scoring needs neither torch nor a GPU.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from llmpopcorn.core.errors import DataError, require
from llmpopcorn.predict.base import Predictor
from llmpopcorn.predict.data import Table
from llmpopcorn.predict.retrieval import id_positions, normalise, retrieve_many

log = logging.getLogger(__name__)

UNKNOWN = "<unknown>"


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


class RetrievalAttention(Predictor):
    """MMRA-style retrieval-augmented regressor (see the module docstring)."""

    name = "mmra"

    def __init__(
        self,
        k: int = 10,
        hidden: int = 128,
        dropout: float = 0.1,
        category_dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        epochs: int = 60,
        patience: int = 8,
        batch_size: int = 256,
        tau: float = 0.05,
        seed: int = 42,
        embedder: str = "minilm",
        visual_dim: int = 0,
        visual_extractor: str = "",
        text_prior: bool = True,
        prior_folds: int = 5,
        threads: int = 1,
    ):
        self.k = k
        self.hidden = hidden
        self.dropout = dropout
        self.category_dropout = category_dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.patience = patience
        self.batch_size = batch_size
        self.tau = tau
        self.seed = seed
        self.embedder = embedder
        self.visual_dim = visual_dim
        self.visual_extractor = visual_extractor
        self.text_prior = text_prior
        self.prior_folds = prior_folds
        self.threads = threads

    def get_params(self) -> dict[str, Any]:
        keys = (
            "k",
            "hidden",
            "dropout",
            "category_dropout",
            "lr",
            "weight_decay",
            "epochs",
            "patience",
            "batch_size",
            "tau",
            "seed",
            "embedder",
            "visual_dim",
            "visual_extractor",
            "text_prior",
            "prior_folds",
            "threads",
        )
        return {key: getattr(self, key) for key in keys}

    # -- inputs ---------------------------------------------------------------------

    def _memory32(self) -> np.ndarray:
        cached = getattr(self, "_mem32", None)
        if cached is None or cached.shape != self.memory_.shape:
            cached = self.memory_.astype(np.float32)
            self._mem32 = cached
        return cached

    def category_index(self, categories: np.ndarray) -> np.ndarray:
        lookup = {str(c): i for i, c in enumerate(self.categories_)}
        return np.array([lookup.get(str(c), 0) for c in categories], dtype=np.int64)

    def neighbours(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        """(indices into the memory, similarities), each (n, k); self excluded by id."""
        return self.neighbours_at(table, (self.k_,))[0]

    def neighbours_at(
        self, table: Table, ks: tuple[int, ...] | list[int]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`neighbours` at each of ``ks`` from one similarity computation (each
        exactly what a retrieval at that k alone returns)."""
        self.check_fitted()
        positions = getattr(self, "_positions", None)
        if positions is None or len(positions) != len(self.memory_ids_):
            positions = self._positions = id_positions(self.memory_ids_)
        return retrieve_many(
            table.embeddings(self.embedder),
            self._memory32(),
            ks,
            query_ids=table.ids,
            memory_ids=positions,
            memory_normalised=True,
        )

    def _visual(self, table: Table) -> np.ndarray | None:
        if not self.visual_dim:
            return None
        if table.visual is None or table.visual.shape[1] != self.visual_dim:
            raise DataError(
                f"the model expects {self.visual_dim} visual features per row",
                "extract them with the same visual extractor the model was trained with",
            )
        return np.asarray(table.visual, dtype=np.float32)

    # -- training -------------------------------------------------------------------

    def fit(
        self, table: Table, valid: Table | None = None, progress: Any = None
    ) -> RetrievalAttention:
        torch = require("torch", "ml", "training the retrieval-augmented predictor")
        from llmpopcorn.predict._mmra_torch import train_network

        y = table.labels
        if len(table) <= self.k + 1:
            raise DataError(f"need more than {self.k + 1} training rows", "use a bigger table")
        self._mem32 = self._positions = None  # caches of a previous fit
        self.memory_ = normalise(table.embeddings(self.embedder)).astype(np.float16)
        self.memory_ids_ = np.asarray(table.ids).astype(str)
        self.categories_ = np.array([UNKNOWN, *sorted(set(map(str, table.categories)))])
        self.memory_cat_ = self.category_index(table.categories)
        self.y_mean_ = float(y.mean())
        self.y_std_ = float(y.std() or 1.0)
        self.memory_y_ = ((y - self.y_mean_) / self.y_std_).astype(np.float32)
        self.k_ = int(min(self.k, len(table) - 1))
        self.dim_ = int(self.memory_.shape[1])

        oof = None
        if self.text_prior:
            oof = self._fit_prior(table, valid, progress)
        train_in = self._inputs(table, prior=oof)
        valid_in = self._inputs(valid) if valid is not None and len(valid) else None
        weights, history = train_network(self, torch, train_in, valid_in, progress=progress)
        self.weights_ = weights
        self.history_ = history
        return self

    def _fit_prior(self, table: Table, valid: Table | None, progress: Any) -> np.ndarray:
        """Fit the lexical prior on all training rows; return its out-of-fold
        predictions on those rows (each from a ridge that never saw the row)."""
        from llmpopcorn.predict.baselines import TfidfRidge

        self.prior_ = TfidfRidge().fit(table, valid)
        alpha = self.prior_.alpha_
        oof = np.zeros(len(table))
        folds = np.random.default_rng(self.seed).permutation(len(table)) % self.prior_folds
        for fold in range(self.prior_folds):
            held = np.flatnonzero(folds == fold)
            fitted = TfidfRidge(alpha=alpha).fit(table.take(np.flatnonzero(folds != fold)))
            oof[held] = fitted.predict(table.take(held))
        return oof

    def _inputs(
        self,
        table: Table,
        prior: np.ndarray | None = None,
        neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        idx, sim = neighbours if neighbours is not None else self.neighbours(table)
        out = {
            "emb": normalise(table.embeddings(self.embedder)),
            "idx": idx,
            "sim": sim.astype(np.float32),
            "cat": self.category_index(table.categories),
        }
        if table.y is not None:
            out["y"] = ((table.y - self.y_mean_) / self.y_std_).astype(np.float32)
        visual = self._visual(table)
        if visual is not None:
            out["visual"] = visual
        if self.text_prior:
            if prior is None:
                prior = self.prior_.predict(table)
            out["prior"] = ((prior - self.y_mean_) / self.y_std_).astype(np.float32)
        return out

    # -- inference (NumPy) ----------------------------------------------------------

    def predict(self, table: Table) -> np.ndarray:
        self.check_fitted()
        if len(table) == 0:
            return np.zeros(0)
        inputs = self._inputs(table)
        return self.forward(inputs)[0] * self.y_std_ + self.y_mean_

    def forward(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Standardised predictions (n,) and attention weights (n, k)."""
        w = self.weights_
        mem = self._memory32()

        def lin(x: np.ndarray, name: str) -> np.ndarray:
            return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

        emb, idx, sim = inputs["emb"], inputs["idx"], inputs["sim"]
        labels = self.memory_y_[idx]  # (n, k)
        h = _relu(lin(emb, "target"))  # (n, H)
        side = np.stack([labels, sim], axis=-1)  # (n, k, 2)
        nb = _relu(lin(mem[idx], "neigh") + lin(side, "side"))  # (n, k, H)
        q = lin(h, "query")
        keys = lin(nb, "key")
        values = lin(nb, "value")
        scores = np.einsum("nh,nkh->nk", q, keys) / math.sqrt(self.hidden)
        scores = scores + w["sim_scale"] * sim
        att = _softmax(scores, axis=1)
        ctx = np.einsum("nk,nkh->nh", att, values)
        by_sim = _softmax(sim / self.tau, axis=1)
        parts = [
            h,
            ctx,
            w["category.weight"][inputs["cat"]],
            (att * labels).sum(1, keepdims=True),
            (by_sim * labels).sum(1, keepdims=True),
            labels.mean(1, keepdims=True),
            sim.mean(1, keepdims=True),
        ]
        if self.visual_dim:
            parts.append(_relu(lin(inputs["visual"], "visual")))
        if self.text_prior:
            parts.append(inputs["prior"][:, None])
        feats = np.concatenate(parts, axis=1)
        out = lin(_relu(lin(feats, "head1")), "head2")[:, 0]
        if self.text_prior:
            out = out + inputs["prior"]  # the network learns a correction to the prior
        return out.astype(np.float64), att

    # -- explanation ----------------------------------------------------------------

    def _derived(self, name: str, sources: tuple[Any, ...], make: Any) -> np.ndarray:
        """A read-only array computed from ``sources`` once, kept until one of them is
        replaced (a refit or a new state)."""
        cached = self.__dict__.get(name)
        if (
            cached is None
            or len(cached[0]) != len(sources)
            or any(a is not b for a, b in zip(cached[0], sources, strict=True))
        ):
            value = make()
            value.setflags(write=False)
            cached = (sources, value)
            self.__dict__[name] = cached
        return cached[1]

    def memory_labels(self) -> np.ndarray:
        """The retrieval memory's labels in log2 comments (read-only, computed once)."""
        return self._derived(
            "_labels_cache",
            (self.memory_y_, self.y_std_, self.y_mean_),
            lambda: self.memory_y_.astype(np.float64) * self.y_std_ + self.y_mean_,
        )

    def memory_category_names(self) -> np.ndarray:
        """The category name of every memory row (read-only, computed once)."""
        return self._derived(
            "_category_names_cache",
            (self.categories_, self.memory_cat_),
            lambda: self.categories_[self.memory_cat_],
        )

    def explain(
        self, table: Table, neighbours: tuple[np.ndarray, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """Predictions with what drove them: ``prediction`` (n,) log2 comments and, per
        row, the ``k`` retrieved memory rows (``neighbours``, best first), their
        ``similarity`` and their ``attention`` weight in the network. ``neighbours``:
        this table's :meth:`neighbours`, when the caller has them already."""
        self.check_fitted()
        idx, sim = neighbours if neighbours is not None else self.neighbours(table)
        standardised, attention = self.forward(self._inputs(table, neighbours=(idx, sim)))
        return {
            "prediction": standardised * self.y_std_ + self.y_mean_,
            "neighbours": idx,
            "similarity": sim,
            "attention": attention,
        }

    # -- state ----------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super().state()
        weights = meta.pop("weights_", None)
        for key, value in (weights or {}).items():
            arrays[f"w:{key}"] = np.asarray(value, dtype=np.float32)
        prior = meta.pop("prior_", None)
        if prior is not None:
            prior_meta, prior_arrays = prior.state()
            meta["prior_state"] = {"params": prior.get_params(), "state": prior_meta}
            arrays.update({f"prior:{k}": v for k, v in prior_arrays.items()})
        return meta, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        meta = dict(meta)
        weights = {k[2:]: v for k, v in arrays.items() if k.startswith("w:")}
        prior_arrays = {k[6:]: v for k, v in arrays.items() if k.startswith("prior:")}
        rest = {k: v for k, v in arrays.items() if ":" not in k}
        prior_state = meta.pop("prior_state", None)
        super().set_state(meta, rest)
        self.weights_ = weights
        if prior_state is not None:
            from llmpopcorn.predict.baselines import TfidfRidge

            self.prior_ = TfidfRidge(**prior_state["params"])
            self.prior_.set_state(prior_state["state"], prior_arrays)
