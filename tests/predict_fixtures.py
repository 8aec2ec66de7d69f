"""Tiny synthetic MicroLens-like tables with a planted signal, and a fake embedder.

Each row belongs to one of 8 topics; its title draws words from the topic's own
vocabulary plus shared filler; its label log2(comment_count) is the topic's level plus
noise; its category is tied to the topic. The fake embedder hashes words to fixed
random vectors, so rows of one topic are near each other, as with a real encoder.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from llmpopcorn.backends.base import Embedder

N_TOPICS = 8
DIM = 32


def word_vector(word: str) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(word.encode()))
    return rng.normal(size=DIM)


class FakeEmbedder(Embedder):
    name = "fake"
    id = "fake-hash-32"

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            words = text.lower().replace(".", " ").split()
            if words:
                out[i] = np.sum([word_vector(w) for w in words], axis=0)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        return out


def synthetic_frame(n: int = 600, seed: int = 0, noise: float = 0.4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    topics = rng.integers(0, N_TOPICS, size=n)
    levels = np.linspace(1.0, 8.0, N_TOPICS)
    filler = [f"filler{i}" for i in range(40)]
    rows = []
    for i, t in enumerate(topics):
        words = [f"topic{t}word{j}" for j in rng.integers(0, 6, size=3)]
        words += list(rng.choice(filler, size=2))
        y = levels[t] + noise * rng.normal()
        rows.append(
            {
                "video_id": str(i + 1),
                "title_en": " ".join(words),
                "cover_desc": "",
                "caption_en": "",
                "partition": f"Cat{t % 4}",
                "likes": 1000 * (i % 7),  # outcome columns exist but must be ignored
                "views": 99999,
                "comment_count": max(1, int(round(2**y))),
            }
        )
    return pd.DataFrame(rows)


def write_csv(path, frame: pd.DataFrame):
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
