"""A lexical embedder: TF-IDF over the corpus vocabulary, reduced by LSA when large.

It needs neither torch nor model weights, so it serves the tests and machines
without the ``[ml]`` extra. The vocabulary and IDF weights are learnt from the
corpus in :meth:`TfidfEmbedder.fit`; when the vocabulary has more terms than
``dim``, a truncated SVD (latent semantic analysis, fixed seed) projects the
sparse vectors to ``dim`` dense dimensions so that the cached matrix stays small
(MicroLens: 16,740 x 256 float32 = 17 MB instead of a dense 16,740 x ~20,000).
With ``dim`` or fewer terms the TF-IDF vectors are kept as they are, so cosine
similarities on tiny corpora are exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmpopcorn.backends.base import Embedder
from llmpopcorn.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: bump when the text processing changes: it is part of the cache key
VERSION = "tfidf-v1"
# words of one letter carry no topic; digits and CJK runs are kept as tokens
TOKEN_PATTERN = r"(?u)\b\w\w+\b|\b\d\b"


class TfidfEmbedder(Embedder):
    name = "tfidf"
    description = (
        "lexical TF-IDF (LSA to 256-d) fitted on the corpus; no torch, for tests and fallback"
    )

    def __init__(self, dim: int = 256):
        if dim < 2:
            raise ConfigError(f"TF-IDF dimension must be at least 2, got {dim}", "use e.g. 256")
        self.dim = dim
        self._vectorizer: Any = None
        self._components: np.ndarray | None = None  # (dim, vocabulary) or None
        self._projection: np.ndarray | None = None  # its transpose, C-contiguous (no copy per call)

    @property
    def id(self) -> str:
        return f"{VERSION}-d{self.dim}"

    def options(self) -> dict[str, Any]:
        return {"dim": self.dim}

    def model_id(self) -> str:
        return self.id

    @staticmethod
    def _new_vectorizer(vocabulary: dict[str, int] | None = None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            lowercase=True,
            strip_accents="unicode",
            token_pattern=TOKEN_PATTERN,
            sublinear_tf=True,
            dtype=_float32(),
            vocabulary=vocabulary,
        )

    def fit(self, texts: list[str]) -> TfidfEmbedder:

        vectorizer = self._new_vectorizer()
        try:
            matrix = vectorizer.fit_transform(texts)
        except ValueError:  # no token at all: an empty vocabulary
            raise ConfigError(
                "the TF-IDF embedder found no words in the corpus texts",
                "check the corpus titles, or use --embedder minilm",
            ) from None
        self._vectorizer = vectorizer
        self._set_components(None)
        n_terms = matrix.shape[1]
        if n_terms > self.dim and matrix.shape[0] > self.dim:
            from sklearn.decomposition import TruncatedSVD

            svd = TruncatedSVD(
                n_components=self.dim, algorithm="randomized", n_iter=5, random_state=0
            )
            svd.fit(matrix)
            self._set_components(svd.components_)
        return self

    def _set_components(self, components: np.ndarray | None) -> None:
        import numpy as np

        if components is None:
            self._components = self._projection = None
            return
        self._components = np.ascontiguousarray(components, dtype=np.float32)
        self._projection = np.ascontiguousarray(self._components.T)

    def state(self) -> dict[str, np.ndarray]:
        import numpy as np

        self._require_fit()
        terms = self._vectorizer.get_feature_names_out()
        out = {
            "terms": np.asarray(terms, dtype=str),
            "idf": np.asarray(self._vectorizer.idf_, dtype=np.float64),
        }
        if self._components is not None:
            out["components"] = self._components
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        import numpy as np

        terms = [str(t) for t in state["terms"]]
        vectorizer = self._new_vectorizer({t: i for i, t in enumerate(terms)})
        vectorizer.idf_ = np.asarray(state["idf"], dtype=np.float64)
        self._vectorizer = vectorizer
        self._set_components(state.get("components"))

    def _require_fit(self) -> None:
        if self._vectorizer is None:
            raise ConfigError(
                "the TF-IDF embedder has no vocabulary yet",
                "call fit(corpus texts) first, or open it through the corpus index",
            )

    def embed(self, texts: list[str]) -> np.ndarray:
        import numpy as np
        from sklearn.preprocessing import normalize

        self._require_fit()
        sparse = self._vectorizer.transform(list(texts))
        dense = sparse.toarray() if self._components is None else sparse @ self._projection
        return normalize(np.asarray(dense, dtype=np.float32)).astype(np.float32, copy=False)


def _float32():
    import numpy as np

    return np.float32
