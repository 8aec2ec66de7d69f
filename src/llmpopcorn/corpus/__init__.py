"""The MicroLens corpus and retrieval over it.

It owns loading and validating the table (``table``), the judge / reference split
(``partition``), the one category resolver (``categories``) and the cached corpus
embeddings with their vector index (``index``). It may import ``core`` and the
embedders in ``backends``; the predictor, PE, the pipeline and the shells build on it.
"""
