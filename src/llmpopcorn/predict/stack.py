"""A stacked ensemble around the MMRA-style retrieval model (``mmra-stack``).

Members, each fitted on the training rows:

* the retrieval-attention network (:class:`~llmpopcorn.predict.mmra.RetrievalAttention`);
  its retrieval memory is the ensemble's memory (``memory_ids_``, ``neighbours()``,
  ``explain()`` ... are delegated to it, so the scorer explains scores with the same
  nearest training videos),
* a lexical ridge on hashed words (1-2-grams), category-crossed words and whole
  hashtags (:class:`LexicalRidge`),
* a ridge on the sentence embedding plus category (:class:`EmbeddingRidge`),
* k-NN label statistics from the same memory (similarity-weighted and plain mean
  labels at k = 5, 10, 20, 50, similarity levels, label spread, same-category mean),
* title-form features (length, hashtags, digits, ?/!, emoji, CJK, capitals, @,
  brackets, episode markers, ...: :func:`title_form`).

A ridge *stacker* combines the two ridges' out-of-fold predictions, the k-NN
statistics (leave-one-out on the training rows: a row never sees its own label) and
the form features; its output is blended with the network's prediction by a
three-parameter least-squares fit on the validation split (the network is
early-stopped on that split too, so validation numbers are tuned; the test split is
the honest one). Inference is NumPy + scikit-learn's hashing only; no torch.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from llmpopcorn.core.errors import DataError
from llmpopcorn.predict.base import Predictor
from llmpopcorn.predict.baselines import EmbeddingRidge, _LinearOnFeatures, category_part, one_hot
from llmpopcorn.predict.data import Table
from llmpopcorn.predict.mmra import RetrievalAttention
from llmpopcorn.predict.retrieval import id_positions, retrieve

KNN_KS = (5, 10, 20, 50)
KNN_TAU = 0.05

_EMOJI = re.compile("[\U0001f000-\U0001ffff\u2600-\u27bf]")
_CJK = re.compile("[\u3000-\u303f\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]")
_BRACKETS = re.compile(r"[【】\[\]()（）《》]")
_EPISODE = re.compile(r"\bepisode|\bep\b|第|part \d|\d+ *集", re.IGNORECASE)
_WORD = re.compile(r"\w+|#")

FORM_FEATURES = (
    "log_chars",
    "log_words",
    "hashtags",
    "no_hashtag",
    "digit_share",
    "question",
    "exclamation",
    "emoji",
    "cjk",
    "upper_share",
    "at",
    "brackets",
    "pipe",
    "non_ascii_share",
    "episode",
    "commas",
    "starts_with_hashtag",
    "log_chars_before_hashtag",
)


def title_form(texts: list[str]) -> np.ndarray:
    """(n, len(FORM_FEATURES)) title-form features (see :data:`FORM_FEATURES`)."""
    rows = []
    for t in texts:
        n = max(len(t), 1)
        head = t.split("#")[0]
        rows.append(
            [
                np.log1p(len(t)),
                np.log1p(len(t.split())),
                t.count("#"),
                "#" not in t,
                sum(c.isdigit() for c in t) / n,
                "?" in t or "？" in t,
                "!" in t or "！" in t,
                len(_EMOJI.findall(t)),
                bool(_CJK.search(t)),
                sum(c.isupper() for c in t) / n,
                "@" in t,
                bool(_BRACKETS.search(t)),
                "|" in t,
                sum(ord(c) > 127 for c in t) / n,
                bool(_EPISODE.search(t)),
                t.count(",") + t.count("，"),
                not head.strip(),
                np.log1p(len(head)),
            ]
        )
    return np.asarray(rows, dtype=np.float64).reshape(len(texts), len(FORM_FEATURES))


def hashtags(text: str) -> list[str]:
    """The hashtags of a title, normalised (``"# Summer strike"`` -> ``summer_strike``)."""
    return [re.sub(r"\W+", "_", x.strip().lower()) for x in text.split("#")[1:] if x.strip()]


class LexicalRidge(_LinearOnFeatures):
    """Ridge on hashed TF-IDF of word 1-2-grams, category-crossed words, whole hashtags
    and the category one-hot. Hashing keeps corpus words out of the saved weights."""

    name = "lex-ridge"
    alphas = (1.0, 2.0, 4.0, 8.0, 16.0)

    def __init__(
        self,
        alpha: float | None = None,
        word_features: int = 2**18,
        cross_features: int = 2**17,
        tag_features: int = 2**15,
        cross_weight: float = 0.7,
        tag_weight: float = 0.7,
    ):
        super().__init__(alpha)
        self.word_features = word_features
        self.cross_features = cross_features
        self.tag_features = tag_features
        self.cross_weight = cross_weight
        self.tag_weight = tag_weight

    def get_params(self) -> dict[str, Any]:
        keys = (
            "alpha",
            "word_features",
            "cross_features",
            "tag_features",
            "cross_weight",
            "tag_weight",
        )
        return {key: getattr(self, key) for key in keys}

    def _counts(self, table: Table):
        import scipy.sparse as sp

        # scikit-learn's HashingVectorizer(alternate_sign=False, norm=None), reproduced
        # exactly without importing scikit-learn at scoring time (see .hashing)
        from llmpopcorn.predict.hashing import hashed_counts

        texts = list(table.texts)
        crossed, tags = self._derived_texts(table)
        words = hashed_counts(texts, self.word_features, ngram_range=(1, 2))
        cross = hashed_counts(crossed, self.cross_features, token_pattern=r"\S+", lowercase=False)
        tag = hashed_counts(tags, self.tag_features, token_pattern=r"\S+", lowercase=False)
        x = sp.hstack([words, cross, tag]).tocsr().astype(np.float32)
        x.data = 1.0 + np.log(x.data)
        return x

    @staticmethod
    def _derived_texts(table: Table) -> tuple[list[str], list[str]]:
        """Per row: its words crossed with its category, and its whole hashtags (each a
        space-separated text hashed as is)."""
        crossed = [
            " ".join(f"{str(c).replace(' ', '_')}__{w}" for w in _WORD.findall(t.lower()))
            for t, c in zip(table.texts, table.categories, strict=True)
        ]
        tags = [" ".join(f"tag_{h}" for h in hashtags(t)) for t in table.texts]
        return crossed, tags

    def _blocks(self) -> list[tuple[int, int, float]]:
        a = self.word_features
        b = a + self.cross_features
        return [(0, a, 1.0), (a, b, self.cross_weight), (b, b + self.tag_features, self.tag_weight)]

    def _prepare(self, table: Table) -> None:
        counts = self._counts(table)
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        n = counts.shape[0]
        self.idf_ = (np.log((1 + n) / (1 + df)) + 1).astype(np.float32)
        self.categories_ = np.array(sorted(set(map(str, table.categories))))

    def features(self, table: Table):
        import scipy.sparse as sp

        from llmpopcorn.predict.hashing import l2_normalize_rows, scale_columns

        x = scale_columns(self._counts(table), self.idf_.astype(np.float32))
        parts = [weight * l2_normalize_rows(x[:, lo:hi]) for lo, hi, weight in self._blocks()]
        cats = sp.csr_matrix(one_hot(table.categories, self.categories_))
        return sp.hstack([*parts, cats]).tocsr()

    def _idf32(self) -> np.ndarray:
        cached = self.__dict__.get("_idf32_cache")
        if cached is None or cached[0] is not self.idf_:
            cached = self.__dict__["_idf32_cache"] = (self.idf_, self.idf_.astype(np.float32))
        return cached[1]

    def features_fast(self, table: Table):
        """The matrix of :meth:`features`, identical, built from per-row arrays."""
        from llmpopcorn.predict.hashing import csr_from_rows, hashed_row, log_tfidf_l2

        crossed, tags = self._derived_texts(table)
        idf = self._idf32()
        width = self._blocks()[-1][1]
        (w0, _, w_words), (w1, _, w_cross), (w2, _, w_tags) = self._blocks()
        cats = category_part(table.categories, self.categories_, width)
        rows = []
        for text, cross, tag, cat in zip(table.texts, crossed, tags, cats, strict=True):
            words = hashed_row(text, self.word_features, (1, 2))
            cross = hashed_row(cross, self.cross_features, (1, 1), r"\S+", False)
            tag = hashed_row(tag, self.tag_features, (1, 1), r"\S+", False)
            rows.append(
                [
                    log_tfidf_l2(*words, idf, offset=w0, weight=w_words),
                    log_tfidf_l2(*cross, idf, offset=w1, weight=w_cross),
                    log_tfidf_l2(*tag, idf, offset=w2, weight=w_tags),
                    cat,
                ]
            )
        return csr_from_rows(rows, width + len(self.categories_))

    def features_for_scoring(self, table: Table):
        return self.features_fast(table) if len(table) <= self.fast_rows else self.features(table)


def knn_k(memory_rows: int) -> int:
    """How many neighbours :func:`knn_statistics` reads from a memory of that size."""
    return min(max(KNN_KS), memory_rows - 1)


def knn_statistics(
    memory: np.ndarray,
    memory_ids: Any,
    memory_labels: np.ndarray,
    memory_categories: np.ndarray,
    queries: np.ndarray,
    query_ids: np.ndarray,
    query_categories: np.ndarray,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(n, 13) label statistics of each row's nearest memory rows (itself excluded).
    ``neighbours``: the rows' retrieval at :func:`knn_k` when the caller has it."""
    if neighbours is None:
        neighbours = retrieve(
            queries,
            memory,
            knn_k(memory.shape[0]),
            query_ids=query_ids,
            memory_ids=memory_ids,
            memory_normalised=True,
        )
    idx, sim = neighbours
    labels = memory_labels[idx]
    out = []
    for kk in KNN_KS:
        s, lab = sim[:, :kk], labels[:, :kk]
        w = np.exp((s - s[:, :1]) / KNN_TAU)
        out.append((w * lab).sum(1) / w.sum(1))
        out.append(lab.mean(1))
    out += [sim[:, 0], sim[:, :10].mean(1), labels[:, :10].std(1)]
    same = memory_categories[idx] == np.asarray(query_categories)[:, None]
    count = same.sum(1)
    fallback = float(memory_labels.mean())
    out.append(np.where(count > 0, (labels * same).sum(1) / np.maximum(count, 1), fallback))
    out.append(same[:, :10].mean(1))
    return np.stack(out, axis=1).astype(np.float64)


class StackedRetrieval(Predictor):
    """MMRA network + lexical/embedding ridges + k-NN statistics + title form, stacked
    (see the module docstring)."""

    name = "mmra-stack"

    def __init__(
        self,
        folds: int = 5,
        stack_alpha: float = 100.0,
        seed: int = 42,
        embedder: str = "minilm",
        mmra: dict[str, Any] | None = None,
        lexical: dict[str, Any] | None = None,
    ):
        self.folds = folds
        self.stack_alpha = stack_alpha
        self.seed = seed
        self.embedder = embedder
        self.mmra = dict(mmra or {})
        self.lexical = dict(lexical or {})

    def get_params(self) -> dict[str, Any]:
        keys = ("folds", "stack_alpha", "seed", "embedder", "mmra", "lexical")
        return {key: getattr(self, key) for key in keys}

    # -- the retrieval memory is the network's ------------------------------------------

    visual_dim = 0
    visual_extractor = ""

    @property
    def retrieval(self) -> RetrievalAttention:
        self.check_fitted()
        return self.mmra_

    def __getattr__(self, key: str) -> Any:
        # memory_ids_, memory_cat_, memory_y_, memory_, categories_, y_mean_, y_std_, k_
        if key.startswith(("memory", "categories_", "y_mean_", "y_std_", "k_", "dim_")):
            member = self.__dict__.get("mmra_")
            if member is not None:
                return getattr(member, key)
        raise AttributeError(key)

    def neighbours(self, table: Table) -> tuple[np.ndarray, np.ndarray]:
        return self.retrieval.neighbours(table)

    def memory_labels(self) -> np.ndarray:
        return self.retrieval.memory_labels()

    def memory_category_names(self) -> np.ndarray:
        return self.retrieval.memory_category_names()

    def explain(self, table: Table) -> dict[str, np.ndarray]:
        """The network's explanation (neighbours, similarity, attention) with the
        ensemble's prediction, plus the network's own under ``retrieval_prediction``.

        When the network and the k-NN statistics search the memory with the same
        embedding (always, unless ``mmra`` overrides the embedder), the memory is
        searched once for both (each gets exactly the neighbours of its own search)."""
        m = self.retrieval
        shared = None
        if m.embedder == self.embedder and len(table):
            shared = m.neighbours_at(table, (m.k_, knn_k(m.memory_.shape[0])))
        out = dict(m.explain(table, neighbours=shared[0] if shared else None))
        out["retrieval_prediction"] = out["prediction"]
        out["prediction"] = self.predict(
            table,
            retrieval_prediction=out["prediction"],
            knn_neighbours=shared[1] if shared else None,
        )
        return out

    # -- training -----------------------------------------------------------------------

    def fit(self, table: Table, valid: Table | None = None, progress: Any = None):
        if len(table) < 2 * self.folds + 2:
            raise DataError(
                f"need at least {2 * self.folds + 2} training rows", "use a bigger table"
            )
        y = table.labels
        self.mmra_ = RetrievalAttention(
            **{"embedder": self.embedder, "seed": self.seed, **self.mmra}
        ).fit(table, valid, progress=progress)
        self.lex_ = LexicalRidge(**self.lexical).fit(table, valid)
        self.emb_ = EmbeddingRidge(embedder=self.embedder).fit(table, valid)
        oof = np.zeros((len(table), 2))
        order = np.random.default_rng(self.seed).permutation(len(table)) % self.folds
        for fold in range(self.folds):
            held = np.flatnonzero(order == fold)
            rest = table.take(np.flatnonzero(order != fold))
            part = table.take(held)
            lex = LexicalRidge(**{**self.lexical, "alpha": self.lex_.alpha_}).fit(rest)
            emb = EmbeddingRidge(alpha=self.emb_.alpha_, embedder=self.embedder).fit(rest)
            oof[held, 0] = lex.predict(part)
            oof[held, 1] = emb.predict(part)
        x = self._stack_features(table, oof)
        self.stack_mean_ = x.mean(0)
        self.stack_scale_ = np.where(x.std(0) > 0, x.std(0), 1.0)
        from sklearn.linear_model import Ridge

        ridge = Ridge(alpha=self.stack_alpha).fit((x - self.stack_mean_) / self.stack_scale_, y)
        self.stack_coef_ = np.asarray(ridge.coef_, dtype=np.float64)
        self.stack_intercept_ = float(ridge.intercept_)
        # blend with the network: least squares on validation (or an even split)
        self.blend_ = np.array([0.0, 0.5, 0.5])
        self.blend_fitted_on_ = "none (even split)"
        if valid is not None and len(valid) >= 20:
            a = np.column_stack(
                [np.ones(len(valid)), self.mmra_.predict(valid), self._stack_predict(valid)]
            )
            self.blend_ = np.linalg.lstsq(a, valid.labels, rcond=None)[0]
            self.blend_fitted_on_ = "validation split"
        return self

    def _positions(self) -> dict[str, int]:
        cached = self.__dict__.get("_id_positions")
        if cached is None or len(cached) != len(self.mmra_.memory_ids_):
            cached = self.__dict__["_id_positions"] = id_positions(self.mmra_.memory_ids_)
        return cached

    def _stack_features(
        self,
        table: Table,
        ridges: np.ndarray,
        knn_neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        m = self.mmra_
        knn = knn_statistics(
            m._memory32(),
            self._positions(),
            m.memory_labels(),
            m.memory_category_names(),
            table.embeddings(self.embedder),
            np.asarray(table.ids).astype(str),
            np.asarray(table.categories).astype(str),
            neighbours=knn_neighbours,
        )
        return np.hstack([ridges, knn, title_form(table.texts)])

    def _stack_predict(
        self, table: Table, knn_neighbours: tuple[np.ndarray, np.ndarray] | None = None
    ) -> np.ndarray:
        ridges = np.column_stack([self.lex_.predict(table), self.emb_.predict(table)])
        x = self._stack_features(table, ridges, knn_neighbours)
        return (x - self.stack_mean_) / self.stack_scale_ @ self.stack_coef_ + self.stack_intercept_

    # -- inference ----------------------------------------------------------------------

    def predict(
        self,
        table: Table,
        retrieval_prediction: np.ndarray | None = None,
        knn_neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """``retrieval_prediction`` / ``knn_neighbours``: the network's prediction and
        the rows' k-NN retrieval (:func:`knn_k` neighbours), when the caller has them."""
        self.check_fitted()
        if len(table) == 0:
            return np.zeros(0)
        if retrieval_prediction is None:
            retrieval_prediction = self.mmra_.predict(table)
        b = self.blend_
        return (
            b[0] + b[1] * retrieval_prediction + b[2] * self._stack_predict(table, knn_neighbours)
        )

    # -- state: members under "<member>." prefixes ----------------------------------------

    MEMBERS = {"mmra_": RetrievalAttention, "lex_": LexicalRidge, "emb_": EmbeddingRidge}

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for key, value in vars(self).items():
            if not key.endswith("_") or key.startswith("_"):
                continue
            if key in self.MEMBERS:
                member_meta, member_arrays = value.state()
                meta[key] = {"params": value.get_params(), "state": member_meta}
                arrays.update({f"{key[:-1]}.{k}": v for k, v in member_arrays.items()})
            elif isinstance(value, np.ndarray):
                arrays[key] = value
            else:
                meta[key] = value
        return meta, arrays

    def set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        meta = dict(meta)
        for key, cls in self.MEMBERS.items():
            saved = meta.pop(key, None)
            if saved is None:
                continue
            prefix = f"{key[:-1]}."
            member = cls(**saved["params"])
            own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            member.set_state(saved["state"], own)
            setattr(self, key, member)
        rest = {k: v for k, v in arrays.items() if "." not in k}
        for key, value in {**meta, **rest}.items():
            setattr(self, key, value)
