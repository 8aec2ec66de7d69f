"""Index-build progress reaches a listener (the studio's "index" events of a first PE run),
and a cancel raised by the listener stops the build."""

from __future__ import annotations

import numpy as np
import pytest

from llmpopcorn.backends.embed.tfidf import TfidfEmbedder
from llmpopcorn.core.progress import progress_listener
from llmpopcorn.corpus.index import load_or_build
from llmpopcorn.corpus.table import load_corpus
from pe_fixtures import write_corpus


def test_a_build_reports_its_progress_to_the_listener(tmp_path):
    corpus = load_corpus(write_corpus(tmp_path / "data"))
    seen: list[tuple[str, int, int]] = []
    with progress_listener(lambda what, done, total: seen.append((what, done, total))):
        entry = load_or_build(corpus, TfidfEmbedder(), tmp_path / "cache")
    assert seen and seen[-1][1] == seen[-1][2] == len(corpus)
    assert [done for _, done, _ in seen] == sorted(done for _, done, _ in seen)
    assert entry.items.shape[0] == len(corpus)
    # outside the block nobody is told, and a cached load reports nothing
    seen.clear()
    load_or_build(corpus, TfidfEmbedder(), tmp_path / "cache")
    assert seen == []


def test_web_jobs_turn_progress_into_index_events_and_cancel_the_build():
    pytest.importorskip("fastapi")
    from llmpopcorn.web.job import JobStopped
    from llmpopcorn.web.progress import index_listener as _index_listener

    class FakeJob:
        stop = None

        def __init__(self):
            self.events = []

        def emit(self, kind, **data):
            self.events.append({"type": kind, **data})

    job = FakeJob()
    listen = _index_listener(job)
    for done in (5, 6, 50, 100):
        listen("embedding corpus texts", done, 100)
    assert [e["percent"] for e in job.events] == [5, 6, 50, 100]
    listen("embedding corpus texts", 100, 100)  # the same percent twice: one event
    assert len(job.events) == 4 and job.events[-1]["type"] == "index"
    job.stop = ("cancelled", "cancelled by the user")
    with pytest.raises(JobStopped):
        listen("embedding corpus texts", 100, 100)
    assert np.isfinite(job.events[0]["percent"])
