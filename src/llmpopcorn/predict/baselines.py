"""Baselines, all on the same split as the retrieval model (see ``benchmarks/``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from llmpopcorn.predict.base import Predictor
from llmpopcorn.predict.data import Table
from llmpopcorn.predict.retrieval import normalise, retrieve


def one_hot(categories: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """(n, C) indicator matrix; categories not in ``vocabulary`` get a zero row."""
    lookup = {str(c): i for i, c in enumerate(vocabulary)}
    out = np.zeros((len(categories), len(vocabulary)), dtype=np.float32)
    for row, cat in enumerate(categories):
        col = lookup.get(str(cat))
        if col is not None:
            out[row, col] = 1.0
    return out


class GlobalMean(Predictor):
    name = "global-mean"

    def fit(self, table: Table, valid: Table | None = None, progress: Any = None) -> GlobalMean:
        self.mean_ = float(np.mean(table.labels))
        return self

    def predict(self, table: Table) -> np.ndarray:
        self.check_fitted()
        return np.full(len(table), self.mean_, dtype=np.float64)


class CategoryMean(Predictor):
    """Mean label of the row's category (shrunk towards the global mean)."""

    name = "category-mean"

    def __init__(self, shrinkage: float = 5.0):
        self.shrinkage = shrinkage

    def get_params(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage}

    def fit(self, table: Table, valid: Table | None = None, progress: Any = None) -> CategoryMean:
        y = table.labels
        self.global_ = float(y.mean())
        self.categories_ = np.array(sorted(set(map(str, table.categories))))
        means = []
        for cat in self.categories_:
            sel = y[table.categories == cat]
            means.append((sel.sum() + self.shrinkage * self.global_) / (len(sel) + self.shrinkage))
        self.means_ = np.array(means, dtype=np.float64)
        return self

    def predict(self, table: Table) -> np.ndarray:
        self.check_fitted()
        lookup = dict(zip(map(str, self.categories_), self.means_, strict=True))
        return np.array([lookup.get(str(c), self.global_) for c in table.categories])


class _LinearOnFeatures(Predictor):
    """Ridge regression on ``features(table)``, alpha chosen on the validation set."""

    alphas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    #: tables up to this many rows are scored through ``features_fast`` where a model
    #: has one (the same matrix from per-row arrays); larger ones, and training, through
    #: ``features``
    fast_rows = 64

    def __init__(self, alpha: float | None = None):
        self.alpha = alpha

    def get_params(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def features(self, table: Table):  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self, table: Table) -> None:
        """Learn any unsupervised state the features need (fit on training rows only)."""

    def fit(self, table: Table, valid: Table | None = None, progress: Any = None):
        from sklearn.linear_model import Ridge

        self._prepare(table)
        x, y = self.features(table), table.labels
        alphas = [self.alpha] if self.alpha is not None else list(self.alphas)
        best = None
        if valid is not None and len(alphas) > 1:
            xv, yv = self.features(valid), valid.labels
            for alpha in alphas:
                pred = Ridge(alpha=alpha).fit(x, y).predict(xv)
                mse = float(np.mean((pred - yv) ** 2))
                if best is None or mse < best[0]:
                    best = (mse, alpha)
        self.alpha_ = float(best[1] if best else alphas[len(alphas) // 2])
        ridge = Ridge(alpha=self.alpha_).fit(x, y)
        self.coef_ = np.asarray(ridge.coef_, dtype=np.float32)
        self.intercept_ = float(ridge.intercept_)
        return self

    def predict(self, table: Table) -> np.ndarray:
        self.check_fitted()
        x = self.features_for_scoring(table)
        return np.asarray(x @ self.coef_, dtype=np.float64).ravel() + self.intercept_

    def features_for_scoring(self, table: Table):
        """What :meth:`predict` multiplies by the coefficients: ``features(table)``, or
        for a few rows the same matrix built faster where a model can."""
        return self.features(table)


def category_part(
    categories: Any, vocabulary: np.ndarray, offset: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each row's :func:`one_hot` category as a sparse row part (columns, values) at
    ``offset``: one 1.0, or nothing for a category outside ``vocabulary``."""
    lookup = {str(c): i for i, c in enumerate(vocabulary)}
    parts = []
    for cat in categories:
        col = lookup.get(str(cat))
        cols = np.array([] if col is None else [offset + col], dtype=np.int64)
        parts.append((cols, np.ones(cols.shape[0], dtype=np.float32)))
    return parts


class TfidfRidge(_LinearOnFeatures):
    """Hashed word 1-2-gram TF-IDF + category one-hot, ridge.

    Hashing (not a fitted vocabulary) keeps corpus words out of the saved weights:
    the model holds only inverse document frequencies and coefficients.
    """

    name = "tfidf-ridge"

    def __init__(self, alpha: float | None = None, n_features: int = 2**18):
        super().__init__(alpha)
        self.n_features = n_features

    def get_params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "n_features": self.n_features}

    def _counts(self, texts: list[str]):
        # scikit-learn's HashingVectorizer(ngram_range=(1, 2), alternate_sign=False,
        # norm=None), reproduced exactly without importing scikit-learn (see .hashing)
        from llmpopcorn.predict.hashing import hashed_counts

        return hashed_counts(list(texts), self.n_features, ngram_range=(1, 2))

    def _prepare(self, table: Table) -> None:
        counts = self._counts(table.texts)
        df = np.bincount(counts.indices, minlength=self.n_features)
        n = counts.shape[0]
        self.idf_ = (np.log((1 + n) / (1 + df)) + 1).astype(np.float32)
        self.categories_ = np.array(sorted(set(map(str, table.categories))))

    def features(self, table: Table):
        import scipy.sparse as sp

        from llmpopcorn.predict.hashing import l2_normalize_rows, scale_columns

        x = self._counts(table.texts).astype(np.float32)
        x.data = 1.0 + np.log(x.data)
        x = l2_normalize_rows(scale_columns(x, self.idf_))
        cats = sp.csr_matrix(one_hot(table.categories, self.categories_))
        return sp.hstack([x, cats]).tocsr()

    def features_fast(self, table: Table):
        """The matrix of :meth:`features`, identical, built from per-row arrays."""
        from llmpopcorn.predict.hashing import csr_from_rows, hashed_row, log_tfidf_l2

        cats = category_part(table.categories, self.categories_, self.n_features)
        rows = [
            [log_tfidf_l2(*hashed_row(text, self.n_features, (1, 2)), self.idf_), cat]
            for text, cat in zip(table.texts, cats, strict=True)
        ]
        return csr_from_rows(rows, self.n_features + len(self.categories_))

    def features_for_scoring(self, table: Table):
        return self.features_fast(table) if len(table) <= self.fast_rows else self.features(table)


class EmbeddingRidge(_LinearOnFeatures):
    """Sentence embedding + category one-hot, ridge."""

    name = "embed-ridge"

    def __init__(self, alpha: float | None = None, embedder: str = "minilm"):
        super().__init__(alpha)
        self.embedder = embedder

    def get_params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "embedder": self.embedder}

    def _prepare(self, table: Table) -> None:
        self.categories_ = np.array(sorted(set(map(str, table.categories))))

    def features(self, table: Table) -> np.ndarray:
        emb = normalise(table.embeddings(self.embedder))
        return np.hstack([emb, one_hot(table.categories, self.categories_)])


class KnnLabels(Predictor):
    """Similarity-weighted mean label of the k nearest training videos (self excluded)."""

    name = "knn"
    ks = (5, 10, 20, 50, 100)

    def __init__(self, k: int | None = None, temperature: float = 0.05, embedder: str = "minilm"):
        self.k = k
        self.temperature = temperature
        self.embedder = embedder

    def get_params(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature, "embedder": self.embedder}

    def fit(self, table: Table, valid: Table | None = None, progress: Any = None) -> KnnLabels:
        self.memory_ = normalise(table.embeddings(self.embedder)).astype(np.float16)
        self.memory_ids_ = np.asarray(table.ids).astype(str)
        self.memory_y_ = np.asarray(table.labels, dtype=np.float32)
        self.categories_ = np.array(["<unknown>", *sorted(set(map(str, table.categories)))])
        lookup = {c: i for i, c in enumerate(self.categories_)}
        self.memory_cat_ = np.array([lookup[str(c)] for c in table.categories], dtype=np.int64)
        self.k_ = int(self.k or 10)
        if self.k is None and valid is not None:
            yv = valid.labels
            scores = {}
            for k in self.ks:
                self.k_ = k
                scores[k] = float(np.mean((self.predict(valid) - yv) ** 2))
            self.k_ = min(scores, key=scores.get)
        return self

    def neighbours(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        """(indices into the memory, similarities), each (n, k); self excluded by id."""
        self.check_fitted()
        return retrieve(
            table.embeddings(self.embedder),
            self.memory_.astype(np.float32),
            self.k_,
            query_ids=table.ids,
            memory_ids=self.memory_ids_,
        )

    def predict(self, table: Table) -> np.ndarray:
        idx, sim = self.neighbours(table)
        w = np.exp((sim - sim.max(axis=1, keepdims=True)) / self.temperature)
        w /= w.sum(axis=1, keepdims=True)
        return (w * self.memory_y_[idx]).sum(axis=1).astype(np.float64)
