"""Hashed token counts without scikit-learn, for scoring.

The lexical parts of the predictors were trained with scikit-learn's
``HashingVectorizer(alternate_sign=False, norm=None)``. Importing scikit-learn costs
1.5-2.5 s of a cold ``popcorn make`` (it pulls in scipy.stats), while scoring one idea
needs only its tokeniser and MurmurHash3. :func:`hashed_counts` reproduces that
transform exactly (same tokens, same word n-grams, same signed 32-bit MurmurHash3
with seed 0, same bucket for the most negative hash); a test compares it with
scikit-learn on varied text. Training keeps using scikit-learn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
_MASK = 0xFFFFFFFF


def murmurhash3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, as a signed int (scikit-learn's ``murmurhash3_32``)."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & _MASK
    n = len(data)
    end = n - n % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * c1) & _MASK
        k = ((k << 15) | (k >> 17)) & _MASK
        k = (k * c2) & _MASK
        h ^= k
        h = ((h << 13) | (h >> 19)) & _MASK
        h = (h * 5 + 0xE6546B64) & _MASK
    tail = data[end:]
    k = 0
    if len(tail) == 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if len(tail) >= 1:
        k ^= tail[0]
        k = (k * c1) & _MASK
        k = ((k << 15) | (k >> 17)) & _MASK
        k = (k * c2) & _MASK
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h - (1 << 32) if h & 0x80000000 else h


@lru_cache(maxsize=8)
def _pattern(token_pattern: str) -> re.Pattern:
    return re.compile(token_pattern)


def tokens(
    text: str,
    *,
    ngram_range: tuple[int, int] = (1, 1),
    token_pattern: str = DEFAULT_TOKEN_PATTERN,
    lowercase: bool = True,
) -> list[str]:
    """The analyser of scikit-learn's word vectorisers: lower-case, regex tokens, then
    word n-grams joined by a space (unigrams first, as scikit-learn orders them)."""
    if lowercase:
        text = text.lower()
    words = _pattern(token_pattern).findall(text)
    lo, hi = ngram_range
    if hi == 1:
        return words if lo == 1 else []
    out = list(words) if lo == 1 else []
    for n in range(max(lo, 2), min(hi, len(words)) + 1):
        out += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    return out


def bucket(token: str, n_features: int) -> int:
    h = murmurhash3_32(token.encode("utf-8"), 0)
    if h == -(2**31):  # abs() overflows in int32: scikit-learn's special case
        return (2**31 - 1 - (n_features - 1)) % n_features
    return abs(h) % n_features


@lru_cache(maxsize=1 << 14)
def _cached_bucket(token: str, n_features: int) -> int:
    # scoring hashes the same words again and again (the lexical ridge and the text
    # prior read the same 1-2-grams; successive ideas share most of their words)
    return bucket(token, n_features)


def _row_counts(
    text: str, n_features: int, ngram_range: tuple[int, int], token_pattern: str, lowercase: bool
) -> dict[int, int]:
    counts: dict[int, int] = {}
    for token in tokens(
        text, ngram_range=ngram_range, token_pattern=token_pattern, lowercase=lowercase
    ):
        j = _cached_bucket(token, n_features)
        counts[j] = counts.get(j, 0) + 1
    return counts


def hashed_counts(
    texts: Sequence[str],
    n_features: int,
    *,
    ngram_range: tuple[int, int] = (1, 1),
    token_pattern: str = DEFAULT_TOKEN_PATTERN,
    lowercase: bool = True,
):
    """A (len(texts), n_features) float64 CSR matrix of token counts: what
    ``HashingVectorizer(n_features, alternate_sign=False, norm=None, ...)`` returns."""
    import scipy.sparse as sp

    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for text in texts:
        counts = _row_counts(text, n_features, tuple(ngram_range), token_pattern, lowercase)
        for j in sorted(counts):
            indices.append(j)
            data.append(float(counts[j]))
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.asarray(data, dtype=np.float64), np.asarray(indices, dtype=np.int32), indptr),
        shape=(len(texts), n_features),
    )


def l2_normalize_rows(x):
    """Rows of a CSR matrix scaled to unit L2 norm (zero rows stay zero), as
    ``sklearn.preprocessing.normalize(x, norm="l2")``."""
    import scipy.sparse as sp

    x = sp.csr_matrix(x, copy=True)
    per_row = np.diff(x.indptr)
    rows = np.repeat(np.arange(x.shape[0]), per_row)
    norms = np.sqrt(
        np.bincount(rows, weights=np.square(x.data, dtype=np.float64), minlength=x.shape[0])
    )
    norms[norms == 0] = 1.0
    x.data /= np.repeat(norms, per_row).astype(x.data.dtype)
    return x


def scale_columns(x, weights: np.ndarray):
    """``x @ diag(weights)`` for a CSR matrix without building the diagonal matrix
    (a 2**18-wide diagonal cost milliseconds per scored idea)."""
    import scipy.sparse as sp

    x = sp.csr_matrix(x, copy=True)
    x.data = x.data * np.asarray(weights)[x.indices]
    return x


# -- a few rows without scipy.sparse: the scoring fast path -----------------------------
#
# Scoring one idea through the CSR functions above built some thirty small scipy.sparse
# matrices (each construction validates its arrays: most of the lexical models' time).
# The functions below apply the same NumPy operations, in the same order and dtypes, to
# each row's arrays and build one CSR matrix at the end, so the product with a model's
# coefficients is bit for bit the same (tests/test_hashing.py, tests/test_predict.py).


@lru_cache(maxsize=1024)
def hashed_row(
    text: str,
    n_features: int,
    ngram_range: tuple[int, int] = (1, 1),
    token_pattern: str = DEFAULT_TOKEN_PATTERN,
    lowercase: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One text's row of :func:`hashed_counts`: its columns (sorted, int64) and counts
    (float64), read-only (kept for the next call with the same text)."""
    counts = _row_counts(text, n_features, tuple(ngram_range), token_pattern, lowercase)
    columns = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
    values = np.array([float(counts[j]) for j in columns.tolist()], dtype=np.float64)
    columns.setflags(write=False)
    values.setflags(write=False)
    return columns, values


def log_tfidf_l2(
    columns: np.ndarray,
    counts: np.ndarray,
    idf: np.ndarray,
    *,
    offset: int = 0,
    weight: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One row part (a :func:`hashed_row`, placed at ``offset``) as the lexical models
    transform their count matrix: counts to float32, ``1 + log``, times the column's
    ``idf`` (:func:`scale_columns`), unit L2 norm (:func:`l2_normalize_rows`), times
    ``weight``. Returns (columns, values)."""
    columns = columns + offset
    data = counts.astype(np.float32)
    data = 1.0 + np.log(data)
    data = data * np.asarray(idf)[columns]
    n = data.shape[0]
    norms = np.sqrt(
        np.bincount(
            np.zeros(n, dtype=np.intp), weights=np.square(data, dtype=np.float64), minlength=1
        )
    )
    norms[norms == 0] = 1.0
    data = data / np.repeat(norms, n).astype(data.dtype)
    if weight is not None:
        data = data * weight
    return columns, data


def csr_from_rows(rows: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]], n_columns: int):
    """One CSR matrix whose row i is the parts ``rows[i]`` (each (columns, values)) laid
    side by side in order (what ``scipy.sparse.hstack`` of the parts' matrices stores)."""
    import scipy.sparse as sp

    columns = [c for row in rows for c, _ in row]
    values = [v for row in rows for _, v in row]
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([sum(c.shape[0] for c, _ in row) for row in rows])
    data = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
    indices = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
    return sp.csr_matrix(
        (data, indices.astype(np.int32), indptr.astype(np.int32)), shape=(len(rows), n_columns)
    )
