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
