"""Embedders, the embedding cache and the vector index (PE, issue 4)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from llmpopcorn.backends.embed.tfidf import TfidfEmbedder
from llmpopcorn.core.errors import ConfigError, UnknownBackendError
from llmpopcorn.corpus.embcache import EmbeddingCache, cache_key
from llmpopcorn.corpus.index import CorpusIndex, corpus_embeddings, get_embedder, load_or_build
from llmpopcorn.corpus.table import load_corpus
from llmpopcorn.corpus.vectors import ExactIndex, top_k
from pe_fixtures import corpus_rows, write_corpus


class CountingEmbedder(TfidfEmbedder):
    """The TF-IDF embedder, counting how many texts it embeds."""

    def __init__(self):
        super().__init__()
        self.embedded = 0

    def embed(self, texts):
        self.embedded += len(texts)
        return super().embed(texts)


@pytest.fixture
def corpus(tmp_path):
    return load_corpus(write_corpus(tmp_path / "data"))


def test_tfidf_vectors_are_normalised_and_lexical(corpus):
    emb = TfidfEmbedder().fit(corpus.texts)
    vecs = emb.embed(["kitten and puppy", "zzzz unknown"])
    assert vecs.dtype == np.float32
    assert np.isclose(np.linalg.norm(vecs[0]), 1.0)
    assert not vecs[1].any()  # no known word: a zero row, not NaN
    sims = emb.embed(corpus.texts) @ vecs[0]
    best = corpus.frame["title_en"].iloc[int(np.argmax(sims))]
    assert "kitten" in best or "puppy" in best


def test_tfidf_needs_fit_and_restores_state(corpus):
    with pytest.raises(ConfigError, match="no vocabulary"):
        TfidfEmbedder().embed(["x"])
    fitted = TfidfEmbedder().fit(corpus.texts)
    copy = TfidfEmbedder()
    copy.load_state(fitted.state())
    assert np.allclose(copy.embed(corpus.texts[:5]), fitted.embed(corpus.texts[:5]))


def test_tfidf_reduces_large_vocabularies_with_lsa():
    texts = [f"word{i} word{i + 1} common" for i in range(60)]
    emb = TfidfEmbedder(dim=8).fit(texts)
    vecs = emb.embed(texts)
    assert vecs.shape == (60, 8)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    again = TfidfEmbedder(dim=8)
    again.load_state(emb.state())
    assert np.allclose(again.embed(texts[:3]), vecs[:3], atol=1e-6)


def test_registry_lists_embedders_and_rejects_unknown():
    assert isinstance(get_embedder("tfidf"), TfidfEmbedder)
    with pytest.raises(UnknownBackendError, match="minilm"):
        get_embedder("nope")


def test_cache_hit_embeds_nothing(corpus, tmp_path):
    first = CountingEmbedder()
    vecs = corpus_embeddings(corpus, first, cache_dir=tmp_path / "cache")
    assert first.embedded == len(corpus) + len(corpus.categories)
    second = CountingEmbedder()
    again = corpus_embeddings(corpus, second, cache_dir=tmp_path / "cache")
    assert second.embedded == 0
    assert isinstance(again, np.memmap)  # loaded memory-mapped
    assert np.array_equal(np.asarray(again), vecs)
    # the vocabulary came back with the entry: queries embed the same way
    assert np.allclose(second.embed(["kitten"]), first.embed(["kitten"]))


def test_cache_key_tracks_corpus_embedder_and_recipe():
    base = cache_key("a" * 64, "tfidf-v1-d256")
    assert base != cache_key("b" * 64, "tfidf-v1-d256")
    assert base != cache_key("a" * 64, "tfidf-v1-d128")
    assert base != cache_key("a" * 64, "tfidf-v1-d256", recipe="other")


def test_changed_corpus_is_embedded_again(tmp_path):
    data = write_corpus(tmp_path / "data")
    emb = CountingEmbedder()
    corpus_embeddings(load_corpus(data), emb, cache_dir=tmp_path / "cache")
    rows = corpus_rows()
    rows[0]["comment_count"] = 999
    write_corpus(data, rows)
    emb2 = CountingEmbedder()
    corpus_embeddings(load_corpus(data), emb2, cache_dir=tmp_path / "cache")
    assert emb2.embedded > 0
    assert len(list((tmp_path / "cache" / "embeddings").glob("*.json"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "stale"])
def test_corrupt_or_stale_cache_is_rebuilt(corpus, tmp_path, caplog, damage):
    cache_dir = tmp_path / "cache"
    good = np.asarray(load_or_build(corpus, TfidfEmbedder(), cache_dir).items).copy()
    key = next((cache_dir / "embeddings").glob("*.json")).stem
    paths = EmbeddingCache(cache_dir).paths(key)
    if damage == "truncate":
        paths["items"].write_bytes(paths["items"].read_bytes()[:100])
    elif damage == "flip":
        raw = bytearray(paths["items"].read_bytes())
        raw[-1] ^= 0xFF
        paths["items"].write_bytes(bytes(raw))
    elif damage == "manifest":
        paths["manifest"].write_text("{not json")
    else:
        manifest = json.loads(paths["manifest"].read_text())
        manifest["format"] = -1
        paths["manifest"].write_text(json.dumps(manifest))
    emb = CountingEmbedder()
    with caplog.at_level(logging.WARNING, logger="llmpopcorn.corpus.index"):
        entry = load_or_build(corpus, emb, cache_dir)
    assert "rebuilding" in caplog.text
    assert emb.embedded > 0 and not entry.hit
    assert np.allclose(np.asarray(entry.items), good)
    # and the rebuilt entry is whole again
    assert load_or_build(corpus, CountingEmbedder(), cache_dir).hit


def test_no_cache_writes_nothing(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load_or_build(corpus, TfidfEmbedder(), use_cache=False)
    assert not (tmp_path / "xdg").exists()
    load_or_build(corpus, TfidfEmbedder())
    assert list((tmp_path / "xdg" / "llmpopcorn" / "embeddings").glob("*.json"))


def test_exact_index_matches_brute_force_and_filters_rows():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(200, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = ExactIndex(vecs)
    q = vecs[7]
    rows, sims = index.search(q, 5)
    assert rows[0] == 7 and np.isclose(sims[0], 1.0)
    assert list(rows) == list(np.argsort(-(vecs @ q), kind="stable")[:5])
    for subset in (np.arange(0, 200, 3), np.arange(0, 20)):  # large and small subsets
        rows, _ = index.search(q, 4, rows=subset)
        scores = vecs[subset] @ q
        assert list(rows) == list(subset[np.argsort(-scores, kind="stable")[:4]])
    rows, _ = index.search(q, 50, rows=np.array([3, 1, 2]))
    assert len(rows) == 3  # k larger than the candidates: all of them


def test_top_k_breaks_ties_by_row_number():
    rows = np.array([9, 4, 7, 1, 5])
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1], dtype=np.float32)
    got, _ = top_k(rows, scores, 3)
    assert list(got) == [4, 1, 7]


def test_corpus_index_groups_rows_by_category(corpus, tmp_path):
    index = CorpusIndex.open(corpus, TfidfEmbedder(), tmp_path / "cache")
    assert index.category_names == corpus.categories
    assert sum(len(r) for r in index.category_rows.values()) == len(corpus)
    sports = index.category_rows["Sports"]
    assert set(corpus.frame["partition"].iloc[sports]) == {"Sports"}
    row = index.row(int(sports[0]))
    assert row["category"] == "Sports" and isinstance(row["comment_count"], int)


# -- issue 9 (reproduction 5) and issue 14: robust, resumable, shared builds ---------------


@pytest.mark.parametrize("manifest", ["[]", "null", "3", '"text"', '{"files": []}'])
def test_a_manifest_of_the_wrong_shape_is_rebuilt_with_a_warning(
    corpus, tmp_path, caplog, manifest
):
    cache_dir = tmp_path / "cache"
    good = np.asarray(load_or_build(corpus, TfidfEmbedder(), cache_dir).items).copy()
    path = next((cache_dir / "embeddings").glob("*.json"))
    path.write_text(manifest)
    emb = CountingEmbedder()
    with caplog.at_level(logging.WARNING, logger="llmpopcorn.corpus.index"):
        entry = load_or_build(corpus, emb, cache_dir)
    assert "corrupt or stale" in caplog.text and "rebuilding" in caplog.text
    assert not entry.hit and emb.embedded > 0
    assert np.allclose(np.asarray(entry.items), good)
    assert json.loads(path.read_text())["rows"] == len(corpus)  # whole again
    assert load_or_build(corpus, CountingEmbedder(), cache_dir).hit


def _disk_full(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_at_save_runs_uncached_with_a_warning(corpus, tmp_path, caplog, monkeypatch):
    import llmpopcorn.corpus.embcache as embcache_mod

    expected = np.asarray(load_or_build(corpus, TfidfEmbedder(), use_cache=False).items).copy()
    monkeypatch.setattr(embcache_mod, "atomic_write", _disk_full)
    cache_dir = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="llmpopcorn.corpus.index"):
        entry = load_or_build(corpus, TfidfEmbedder(), cache_dir)
        index = CorpusIndex.open(corpus, TfidfEmbedder(), cache_dir)
    assert "running uncached" in caplog.text and "No space left" in caplog.text
    assert np.allclose(np.asarray(entry.items), expected) and not entry.hit
    assert not list((cache_dir / "embeddings").glob("*.json"))  # no entry that looks whole
    rows, _ = index.index.search(index.embed_query("kitten"), 3)
    assert len(rows) == 3


def test_an_unwritable_cache_folder_runs_uncached(corpus, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="llmpopcorn.corpus.index"):
        entry = load_or_build(corpus, TfidfEmbedder(), blocker / "cache")
    assert "running uncached" in caplog.text
    assert entry.items.shape[0] == len(corpus)


class InterruptingEmbedder(CountingEmbedder):
    """Stops the build (like Ctrl-C) after ``limit`` corpus texts."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def embed(self, texts):
        if len(texts) > 0 and self.embedded + len(texts) > self.limit and len(texts) > 1:
            raise KeyboardInterrupt
        return super().embed(texts)


def test_an_interrupted_build_resumes_where_it_stopped(corpus, tmp_path, monkeypatch):
    import llmpopcorn.corpus.build as build_mod

    monkeypatch.setattr(build_mod, "CHUNK_ROWS", 8)
    monkeypatch.setattr(build_mod, "EMBED_BATCH", 8)
    cache_dir = tmp_path / "cache"
    names = len(corpus.categories)
    first = InterruptingEmbedder(limit=names + 8 * 3)  # category names, then 3 chunks
    with pytest.raises(KeyboardInterrupt):
        load_or_build(corpus, first, cache_dir)
    chunks = list((cache_dir / "embeddings").glob("*.chunks/*.npy"))
    assert len(chunks) == 3
    assert not list((cache_dir / "embeddings").glob("*.json"))
    second = CountingEmbedder()
    entry = load_or_build(corpus, second, cache_dir)
    assert second.embedded == names + len(corpus) - 8 * 3  # the 3 chunks were not redone
    whole = load_or_build(corpus, TfidfEmbedder(), use_cache=False)
    assert np.allclose(np.asarray(entry.items), np.asarray(whole.items), atol=1e-6)
    assert not list((cache_dir / "embeddings").glob("*.chunks"))  # tidied once whole


def test_a_concurrent_build_waits_for_the_first_and_reuses_it(corpus, tmp_path):
    import threading

    cache_dir = tmp_path / "cache"
    started, release = threading.Event(), threading.Event()

    class SlowEmbedder(CountingEmbedder):
        def embed(self, texts):
            started.set()
            release.wait(10)
            return super().embed(texts)

    slow, second = SlowEmbedder(), CountingEmbedder()
    results = {}
    a = threading.Thread(
        target=lambda: results.setdefault("a", load_or_build(corpus, slow, cache_dir))
    )
    a.start()
    assert started.wait(10)
    b = threading.Thread(
        target=lambda: results.setdefault("b", load_or_build(corpus, second, cache_dir))
    )
    b.start()
    b.join(0.5)
    assert b.is_alive()  # waiting on the lock, not embedding
    release.set()
    a.join(10)
    b.join(10)
    assert second.embedded == 0 and results["b"].hit
    assert np.array_equal(np.asarray(results["a"].items), np.asarray(results["b"].items))


def test_vectors_the_shipped_predictor_carries_are_reused(corpus, tmp_path, monkeypatch):
    import llmpopcorn.corpus.build as index_mod

    fitted = TfidfEmbedder().fit([*corpus.texts, *corpus.categories])
    half = np.arange(0, len(corpus), 2)
    ids = np.asarray(corpus.frame["video_id"].astype(str).to_numpy()[half], dtype=str)
    memory = fitted.embed([corpus.texts[i] for i in half]).astype(np.float16)
    weights = tmp_path / "weights.npz"
    np.savez(weights, memory_=memory, memory_ids_=ids)
    monkeypatch.setattr(index_mod, "PREDICTOR_WEIGHTS", weights)
    emb = CountingEmbedder()
    entry = load_or_build(corpus, emb, tmp_path / "cache")
    checks = min(index_mod.MEMORY_CHECK_ROWS, len(half))
    names = len(corpus.categories)
    assert emb.embedded == names + checks + len(corpus) - len(half)
    whole = load_or_build(corpus, TfidfEmbedder(), use_cache=False, reuse_memory=False)
    cosine = np.sum(np.asarray(entry.items) * np.asarray(whole.items), axis=1)
    assert cosine.min() > 0.999
    # a memory from another embedder (random vectors) is checked and not used
    rng = np.random.default_rng(0)
    np.savez(weights, memory_=rng.normal(size=memory.shape).astype(np.float16), memory_ids_=ids)
    other = CountingEmbedder()
    load_or_build(corpus, other, tmp_path / "cache2")
    assert other.embedded == names + checks + len(corpus)
    # an ensemble stores its retrieval member's memory under "mmra." (the shipped models)
    np.savez(weights, **{"mmra.memory_": memory, "mmra.memory_ids_": ids})
    stacked = CountingEmbedder()
    load_or_build(corpus, stacked, tmp_path / "cache3")
    assert stacked.embedded == names + checks + len(corpus) - len(half)


def test_the_shipped_predictor_has_a_memory_to_reuse():
    import llmpopcorn.corpus.build as index_mod

    with np.load(index_mod.PREDICTOR_WEIGHTS, allow_pickle=False) as npz:
        assert {"mmra.memory_", "mmra.memory_ids_"} <= set(npz.files) or {
            "memory_",
            "memory_ids_",
        } <= set(npz.files)


def test_progress_bar_shows_count_rate_and_eta():
    import io

    from llmpopcorn.core.progress import Progress

    out = io.StringIO()
    bar = Progress(1000, "embedding corpus texts", show=True, stream=out)
    bar.every = 0.0
    for _ in range(4):
        bar.advance(250)
    bar.close()
    text = out.getvalue()
    assert "1,000 to embed, about" in text  # the estimate after the first batch
    assert "500/1,000 (50%)" in text and "/s ETA" in text  # a line per `every` seconds
    assert text.rstrip().endswith("done in 0:00")


def test_progress_in_a_log_is_one_line():
    """Not on a terminal, work shorter than `every` writes one line: the estimate, ended
    with the time it took (the first PE run and a model export each show one line)."""
    import io

    from llmpopcorn.core.progress import Progress, one_time

    out = io.StringIO()
    bar = Progress(1000, "embedding corpus texts", show=True, stream=out)
    for _ in range(4):
        bar.advance(250)
    bar.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.startswith("embedding corpus texts: 1,000 to embed")
    assert text.endswith("... done in 0:00\n")
    out = io.StringIO()
    with one_time("exporting MiniLM to ONNX once", stream=out):
        pass
    assert out.getvalue() == "exporting MiniLM to ONNX once ... done in 0:00\n"


def _clustered(n, dim=64, clusters=100, seed=0):
    """Unit vectors around ``clusters`` centres (embeddings have such structure;
    uniform random vectors have none, and every index is slow to search them)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vecs = centres[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, dim))
    vecs = vecs.astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def test_the_approximate_index_finds_95_percent_of_the_exact_top_50():
    pytest.importorskip("faiss")
    from llmpopcorn.corpus.vectors import IVFIndex, make_index

    vecs = _clustered(20_000)
    ivf, exact = IVFIndex(vecs, nlist=128), ExactIndex(vecs)  # the default nprobe
    queries = _clustered(50, seed=1)
    recall = []
    for q in queries:
        got, sims = ivf.search(q, 50)
        want, _ = exact.search(q, 50)
        recall.append(len(set(got) & set(want)) / 50)
        assert np.allclose(sims, vecs[got] @ q, atol=1e-6)  # scores are exact
        assert list(sims) == sorted(sims, reverse=True)
    assert np.mean(recall) >= 0.95, np.mean(recall)
    # a filter: only those rows come back; small pools are exact
    pool = np.arange(1, 20_000, 2)
    got, _ = ivf.search(queries[0], 20, rows=pool)
    assert set(got) <= set(pool) and len(got) == 20
    small = np.arange(0, 300)
    assert list(ivf.search(queries[0], 5, rows=small)[0]) == list(
        exact.search(queries[0], 5, rows=small)[0]
    )
    # chosen by size
    assert isinstance(make_index(vecs[:1000]), ExactIndex)
    assert isinstance(make_index(vecs[:1000], approximate=True), IVFIndex)


def test_the_approximate_index_is_kept_and_loaded_again(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    from llmpopcorn.corpus.vectors import IVFIndex

    vecs = _clustered(5_000, dim=32)
    path = tmp_path / "x.ivf.faiss"
    first = IVFIndex(vecs, nlist=32, path=path)
    assert path.is_file()

    def no_build(self, *args):
        raise AssertionError("rebuilt instead of loaded")

    monkeypatch.setattr(IVFIndex, "_build", no_build)
    again = IVFIndex(vecs, nlist=32, path=path)
    q = vecs[3]
    assert list(again.search(q, 10)[0]) == list(first.search(q, 10)[0])
    monkeypatch.undo()
    path.write_bytes(b"garbage")  # unreadable: rebuilt with a warning, and saved whole again
    IVFIndex(vecs, nlist=32, path=path)
    assert path.stat().st_size > 1000


def test_slow_steps_show_the_time_each_takes_not_zero_per_second():
    """A conversion of 2 steps of ~15 s each said 'about 0:24 at 0/s'."""
    from llmpopcorn.core.progress import _rate

    assert _rate(86.4) == "86/s" and _rate(0.0625) == "16 s each" and _rate(0.0) == "0/s"
