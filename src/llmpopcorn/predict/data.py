"""The predictor's input table, labels and the seeded 80/10/10 split.

A :class:`Table` holds only content known before publishing (title, cover
description, caption, category) plus the label ``y = log2(comment_count)`` when the
table has one. Likes and views are outcomes, not content: they are never read here.
Embeddings are attached per embedder name (``table.features``) so that the corpus is
embedded once and every subset shares those rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmpopcorn.core.errors import DataError
from llmpopcorn.corpus.table import (
    TEXT_FIELDS,
    Corpus,
    item_text,
    read_table,
    resolve_corpus_path,
    validate_frame,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

#: the model's name for a text input -> the corpus column it is read from
#: a text column carries information when at least this share of rows has a value of
#: its own (a cover_desc that only copies the title does not count)
MIN_FIELD_SHARE = 0.01


@dataclass
class Table:
    """Rows to fit or score. ``y`` is log2(comment_count) or ``None`` (unlabelled)."""

    ids: np.ndarray
    texts: list[str]
    categories: np.ndarray
    y: np.ndarray | None = None
    titles: list[str] = field(default_factory=list)
    #: embedder name -> (n, d) float32 array aligned with the rows
    features: dict[str, np.ndarray] = field(default_factory=dict)
    #: optional (n, v) visual features (from a rendered clip or video frames)
    visual: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.texts)
        self.ids = np.asarray(self.ids, dtype=object)
        self.categories = np.asarray(self.categories, dtype=object)
        if not self.titles:
            self.titles = list(self.texts)
        if len(self.ids) != n or len(self.categories) != n or len(self.titles) != n:
            raise ValueError("ids, texts, titles and categories must have the same length")
        if self.y is not None:
            self.y = np.asarray(self.y, dtype=np.float64)
            if self.y.shape != (n,):
                raise ValueError(f"y has shape {self.y.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labels(self) -> np.ndarray:
        if self.y is None:
            raise DataError("this table has no labels", "use a CSV with a comment_count column")
        return self.y

    def take(self, index: Sequence[int] | np.ndarray) -> Table:
        """The rows at ``index`` (features travel along)."""
        idx = np.asarray(index, dtype=np.int64)
        return Table(
            ids=self.ids[idx],
            texts=[self.texts[i] for i in idx],
            categories=self.categories[idx],
            y=None if self.y is None else self.y[idx],
            titles=[self.titles[i] for i in idx],
            features={k: v[idx] for k, v in self.features.items()},
            visual=None if self.visual is None else self.visual[idx],
        )

    def embeddings(self, embedder: str, embed: Callable[[list[str]], np.ndarray] | None = None):
        """The rows' embeddings by ``embedder`` (computed once, then kept)."""
        if embedder not in self.features:
            if embed is None:
                from llmpopcorn.predict.embed import embed_function

                embed = embed_function(embedder)
            vectors = np.asarray(embed(self.texts), dtype=np.float32)
            if vectors.shape[0] != len(self):
                raise ValueError("the embedder returned a different number of rows")
            self.features[embedder] = vectors
        return self.features[embedder]

    # -- constructors ----------------------------------------------------------------

    @classmethod
    def from_corpus(
        cls,
        corpus: Corpus,
        *,
        require_label: bool = True,
        text_fields: Sequence[str] | None = None,
    ) -> Table:
        """Rows of ``corpus``; ``text_fields`` (default: every text column) names the
        columns the row text is built from (see :data:`TEXT_FIELDS`)."""
        f = corpus.frame
        y = None
        if "comment_count" in f.columns:
            y = labels_from_counts(f["comment_count"].to_numpy(), where=str(corpus.path or "table"))
        elif require_label:
            raise DataError("the table has no comment_count column", "add the label column")
        if text_fields is None:
            texts = list(corpus.texts)
        else:
            texts = texts_from_fields(f, text_fields)
        return cls(
            ids=f["video_id"].astype(str).to_numpy(),
            texts=texts,
            categories=f["partition"].astype(str).to_numpy(),
            y=y,
            titles=f["title_en"].astype(str).tolist(),
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, require_label: bool = True) -> Table:
        corpus = validate_frame(frame, require_label=require_label)
        _check_rejected(corpus, "the table")
        return cls.from_corpus(corpus, require_label=require_label)


def informative_fields(corpus: Corpus, min_share: float = MIN_FIELD_SHARE) -> list[str]:
    """The text fields that carry information in ``corpus`` (``corpus.fields_present``:
    a cover description that copies the title is absent); the title always counts."""
    present = corpus.fields_present()
    n = max(len(corpus), 1)
    fields = ["title"]
    for name, column in TEXT_FIELDS.items():
        if name != "title" and present.get(column, 0) / n >= min_share:
            fields.append(name)
    return fields


def texts_from_fields(frame: pd.DataFrame, text_fields: Sequence[str]) -> list[str]:
    """Row texts built from exactly ``text_fields`` (title first, then the others)."""
    unknown = [name for name in text_fields if name not in TEXT_FIELDS]
    if unknown:
        raise DataError(
            f"unknown text field(s): {', '.join(unknown)}",
            f"use some of: {', '.join(TEXT_FIELDS)}",
        )
    n = len(frame)

    def column(name: str) -> list[str]:
        if name not in text_fields:
            return [""] * n
        return frame[TEXT_FIELDS[name]].fillna("").astype(str).tolist()

    return [
        item_text(t, c, p)
        for t, c, p in zip(column("title"), column("cover_desc"), column("caption"), strict=True)
    ]


def labels_from_counts(counts: np.ndarray, *, where: str = "the table") -> np.ndarray:
    """log2(comment_count); every count must be a positive integer."""
    counts = np.asarray(counts, dtype=np.float64)
    bad = counts <= 0
    if bad.any():
        raise DataError(
            f"{where}: {int(bad.sum())} row(s) have comment_count <= 0; the label is "
            "log2(comment_count)",
            "every MicroLens video has at least one comment: drop or fix those rows",
        )
    return np.log2(counts)


def _check_rejected(corpus: Corpus, where: str) -> None:
    bad = {k: v for k, v in corpus.rejected.items() if "comment_count" in k}
    if bad:
        detail = ", ".join(f"{n} {k}" for k, v in bad.items() for n in [v])
        raise DataError(
            f"{where} has unusable labels: {detail}",
            "comment_count must be a positive integer on every row",
        )


def load_table(
    data: str | Path | None,
    *,
    require_label: bool = True,
    text_fields: Sequence[str] | str | None = None,
) -> tuple[Table, Corpus]:
    """Read a labelled table from a data directory or CSV (strict about labels).

    ``text_fields``: the text fields to build row texts from (default: every text
    column; ``"informative"``: those :func:`informative_fields` finds in the table)."""
    path = resolve_corpus_path(data)
    corpus = read_table(path, require_label=require_label)
    from llmpopcorn.corpus.table import file_sha256

    corpus.sha256 = file_sha256(path)
    _check_rejected(corpus, str(path))
    if text_fields == "informative":
        text_fields = informative_fields(corpus)
    table = Table.from_corpus(corpus, require_label=require_label, text_fields=text_fields)
    return table, corpus


def split_indices(
    n: int, seed: int = 42, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random train/validation/test split of ``range(n)`` (80/10/10)."""
    if n < 3:
        raise DataError(f"need at least 3 rows to split, got {n}", "use a bigger table")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    n_train = min(max(n_train, 1), n - 2)
    n_val = min(max(n_val, 1), n - n_train - 1)
    train, val, test = np.split(order, [n_train, n_train + n_val])
    # kept in random order: the batched metrics use consecutive batches of this order
    return train, val, test
