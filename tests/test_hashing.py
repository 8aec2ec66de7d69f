"""The scikit-learn-free hashing used at scoring time equals scikit-learn's exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest

from llmpopcorn.predict.hashing import hashed_counts, l2_normalize_rows, murmurhash3_32

sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")


def _texts() -> list[str]:
    rng = random.Random(0)
    fixed = [
        "",
        "x",
        "A corgi learns to SURF #fun #corgi",
        "猫が好き 猫が好き cats cats",
        "Top 10 boss fights!!! 2024 ranked — part 2",
        "don't stop-believing_now",
        "Café ÉLAN 🎉🎉",
    ]
    noise = [
        "".join(chr(rng.randint(32, 0x3000)) for _ in range(rng.randint(0, 60))) for _ in range(300)
    ]
    return fixed + noise


def test_murmurhash_matches_scikit_learn():
    from sklearn.utils.murmurhash import murmurhash3_32 as reference

    for text in _texts():
        data = text.encode("utf-8", "surrogatepass")
        assert murmurhash3_32(data) == reference(data, seed=0, positive=False)


@pytest.mark.parametrize(
    "options",
    [{}, {"ngram_range": (1, 2)}, {"token_pattern": r"\S+", "lowercase": False}],
)
def test_counts_and_normalisation_match_scikit_learn(options):
    from sklearn.preprocessing import normalize

    texts = _texts()
    expected = sklearn_text.HashingVectorizer(
        n_features=2**18, alternate_sign=False, norm=None, **options
    ).transform(texts)
    got = hashed_counts(texts, 2**18, **options)
    assert (expected != got).nnz == 0
    assert abs(normalize(expected, norm="l2") - l2_normalize_rows(got)).max() < 1e-12
    assert np.allclose(l2_normalize_rows(got[:1]).toarray(), 0)  # an empty text stays zero


def test_scale_columns_is_a_product_with_the_diagonal():
    import scipy.sparse as sp

    from llmpopcorn.predict.hashing import scale_columns

    x = hashed_counts(_texts()[:50], 2**12, ngram_range=(1, 2)).astype(np.float32)
    weights = np.random.default_rng(0).random(2**12).astype(np.float32) + 1
    expected = (x @ sp.diags(weights)).toarray()
    assert np.allclose(scale_columns(x, weights).toarray(), expected, rtol=1e-6, atol=0)


# -- the scoring fast path: the same matrices without one scipy.sparse object per step ---


def _bitwise_equal_csr(a, b) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.data.tobytes() == b.data.tobytes()  # bit for bit, not approximately


def _rows(n: int = 300):
    """Varied texts (empty, punctuation only, hashtags, CJK, emoji, repeats, noise) with
    categories that include names with spaces, an unknown one and an empty one."""
    from llmpopcorn.predict import Table

    texts = _texts()[:n]
    texts += ["#", "# #", "#Summer strike #game fun", "wow wow wow wow wow", "x y", "   "]
    cats = ["Food", "Game", "Daily Life", "NoSuchCategory", ""]
    categories = [cats[i % len(cats)] for i in range(len(texts))]
    return Table(
        ids=[str(i) for i in range(len(texts))], texts=texts, categories=categories, titles=texts
    )


def _fitted_lexical(idf_dtype=np.float32):
    from llmpopcorn.predict.stack import LexicalRidge

    model = LexicalRidge()
    width = model.word_features + model.cross_features + model.tag_features
    model.idf_ = (np.random.default_rng(1).random(width) * 5 + 1).astype(idf_dtype)
    model.categories_ = np.array(sorted(["Food", "Game", "Daily Life", "Sports"]))
    return model


def _fitted_tfidf(idf_dtype=np.float32):
    from llmpopcorn.predict.baselines import TfidfRidge

    model = TfidfRidge()
    model.idf_ = (np.random.default_rng(2).random(model.n_features) * 5 + 1).astype(idf_dtype)
    model.categories_ = np.array(sorted(["Food", "Game", "Daily Life", "Sports"]))
    return model


@pytest.mark.parametrize("make", [_fitted_lexical, _fitted_tfidf])
@pytest.mark.parametrize("idf_dtype", [np.float32, np.float64])
def test_fast_features_are_the_csr_features_bit_for_bit(make, idf_dtype):
    """features_fast (scoring a few rows) builds exactly the matrix of features (tables,
    training): same structure, same float bits, for a whole table and row by row."""
    model, table = make(idf_dtype), _rows()
    _bitwise_equal_csr(model.features_fast(table), model.features(table))
    for row in range(0, len(table), 7):
        one = table.take([row])
        _bitwise_equal_csr(model.features_fast(one), model.features(one))


@pytest.mark.parametrize("make", [_fitted_lexical, _fitted_tfidf])
def test_fast_and_csr_predictions_are_identical(make):
    model, table = make(), _rows()
    model.coef_ = (
        np.random.default_rng(3)
        .normal(size=model.features(table.take([0])).shape[1])
        .astype(np.float32)
    )
    model.intercept_ = 1.25
    model.fast_rows = 0  # every table through features(): the path tables take
    slow = np.concatenate([model.predict(table.take([i])) for i in range(len(table))])
    model.fast_rows = 64
    fast = np.concatenate([model.predict(table.take([i])) for i in range(len(table))])
    assert slow.tobytes() == fast.tobytes()
    assert len(np.unique(fast)) > len(table) // 2  # the rows really differ


def test_hashed_row_is_a_row_of_hashed_counts():
    from llmpopcorn.predict.hashing import hashed_row

    texts = _texts()
    for options in ({}, {"ngram_range": (1, 2)}, {"token_pattern": r"\S+", "lowercase": False}):
        matrix = hashed_counts(texts, 2**18, **options)
        for i, text in enumerate(texts):
            columns, counts = hashed_row(
                text,
                2**18,
                options.get("ngram_range", (1, 1)),
                options.get("token_pattern", r"(?u)\b\w\w+\b"),
                options.get("lowercase", True),
            )
            lo, hi = matrix.indptr[i], matrix.indptr[i + 1]
            np.testing.assert_array_equal(columns, matrix.indices[lo:hi])
            assert counts.tobytes() == matrix.data[lo:hi].tobytes()
            assert not columns.flags.writeable  # cached: callers cannot change it
