"""The category resolver's building blocks: centroids, ranking, minimum size, ties."""

from __future__ import annotations

import numpy as np
import pytest

from llmpopcorn.core.errors import ConfigError
from llmpopcorn.corpus.categories import CategoryProfile, CategoryResolver


def test_centroids_equal_the_normalised_mean_of_normalised_members():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 16)).astype(np.float16)
    member = rng.integers(0, 4, size=500)  # category 4 has no member
    profile = CategoryProfile.from_members(list("abcde"), member, vectors, chunk=64)
    for i in range(4):
        x = vectors[member == i].astype(np.float64)
        mean = (x / np.linalg.norm(x, axis=1, keepdims=True)).sum(0)
        assert np.allclose(profile.centroids[i], mean / np.linalg.norm(mean), atol=1e-5)
    assert not profile.centroids[4].any() and profile.sizes[4] == 0
    assert profile.sizes[:4].sum() == 500


def _profile():
    names = ["big", "small", "other"]
    centroids = np.eye(3, dtype=np.float32)
    return CategoryProfile(names, np.array([100, 3, 80]), centroids, name_vectors=centroids[::-1])


def test_rank_skips_small_categories_and_breaks_ties_by_size():
    resolver = CategoryResolver(_profile(), min_size=50)
    assert [c.name for c in resolver.rank(np.array([0.1, 1.0, 0.0]))] == ["big", "other"]
    assert resolver.best(np.zeros(3)) == "big"  # no signal: the larger category
    everything = CategoryResolver(_profile(), min_size=1)
    assert everything.best(np.array([0.1, 1.0, 0.0])) == "small"
    assert CategoryResolver(_profile(), min_size=1000).best(np.array([0, 1.0, 0])) == "small"


def test_name_matcher_uses_name_vectors_and_unknown_methods_fail():
    resolver = CategoryResolver(_profile(), method="name", min_size=1)
    assert resolver.best(np.array([1.0, 0, 0])) == "other"  # reversed name vectors
    with pytest.raises(ConfigError, match="unknown category matcher"):
        CategoryResolver(_profile(), method="vibes")
