"""`popcorn prompt`, `popcorn corpus info|index` and the corpus checks PE relies on (issue 4)."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from llmpopcorn.cli import main
from llmpopcorn.core.errors import DataError
from llmpopcorn.corpus.table import load_corpus
from pe_fixtures import HEADER, corpus_rows, write_corpus


@pytest.fixture
def data(tmp_path):
    return write_corpus(tmp_path / "data")


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_prompt_basic_prints_the_messages_and_no_references(data):
    result = run("prompt", "a corgi learns to surf")
    assert result.exit_code == 0
    assert (
        "===== system =====" in result.output
        and "User request: a corgi learns to surf" in result.output
    )
    assert "===== references =====" not in result.output


def test_prompt_pe_shows_messages_and_references(data, tmp_path):
    args = (
        "--mode",
        "pe",
        "--data",
        str(data),
        "--embedder",
        "tfidf",
        "--cache-dir",
        str(tmp_path / "c"),
    )
    result = run("prompt", "a game boss fight", *args, "--refs", "10")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "===== references =====" in out and "Categories: Game" in out
    assert "Shown:      9 popular + 1 unpopular" in out
    as_json = json.loads(run("prompt", "a game boss fight", *args, "--refs", "10", "--json").output)
    assert as_json["mode"] == "pe" and len(as_json["references"]) == 10
    for ref in as_json["references"]:
        assert ref["title"] in out
    assert as_json["messages"][1]["content"] in out  # the exact user message


def test_prompt_errors_are_clear(data, tmp_path):
    result = CliRunner().invoke(main, ["prompt", "   "])
    assert result.exit_code == 2 and "empty" in result.output
    result = CliRunner().invoke(main, ["prompt", "x", "--mode", "pe", "--embedder", "tfidf"])
    assert result.exit_code == 2 and "POPCORN_DATA" in result.output
    result = CliRunner().invoke(
        main, ["prompt", "x", "--mode", "pe", "--data", str(data), "--embedder", "nope"]
    )
    assert result.exit_code == 2 and "available embedder backends" in result.output


def test_corpus_info(data):
    result = run("corpus", "info", "--data", str(data))
    assert result.exit_code == 0
    assert "Rows:       40" in result.output and "Game" in result.output
    summary = json.loads(run("corpus", "info", "--data", str(data), "--json").output)
    assert summary["rows"] == 40
    assert summary["categories"] == {"Game": 15, "Animal": 12, "Delicacy": 10, "Sports": 3}
    assert summary["comment_count_quantiles"]["0"] == 5.0
    assert summary["fields_present"] == {"title_en": 40, "cover_desc": 0, "caption_en": 0}
    assert summary["cover_desc_copies_title"] == 40


def test_corpus_index_builds_once_then_loads(data, tmp_path):
    args = (
        "corpus",
        "index",
        "--data",
        str(data),
        "--embedder",
        "tfidf",
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert "built and saved" in run(*args).output
    assert "loaded from the cache" in run(*args).output


# -- the corpus checks (corpus.py) that PE depends on -------------------------------------


def test_missing_data_directory_names_the_setting(tmp_path):
    with pytest.raises(DataError, match="POPCORN_DATA"):
        load_corpus(None)
    with pytest.raises(DataError, match="POPCORN_DATA"):
        load_corpus(tmp_path / "nowhere")


def test_missing_columns_are_listed(tmp_path):
    header = [c for c in HEADER if c not in ("partition", "comment_count")]
    data = write_corpus(tmp_path / "d", header=header)
    with pytest.raises(DataError, match="partition, comment_count"):
        load_corpus(data)


def test_bad_rows_are_rejected_counted_and_sampled(tmp_path, caplog):
    rows = corpus_rows()
    rows[0]["comment_count"] = "many"
    rows[1]["comment_count"] = -3
    rows[2]["video_id"] = rows[3]["video_id"]
    rows[4]["title_en"] = "   "
    with caplog.at_level(logging.WARNING, logger="llmpopcorn.corpus.table"):
        corpus = load_corpus(write_corpus(tmp_path / "d", rows))
    assert len(corpus) == 36
    assert corpus.rejected == {
        "empty title": 1,
        "non-numeric comment_count": 1,
        "negative comment_count": 1,
        "duplicate video_id": 1,
    }
    assert "dropped 4 row(s)" in caplog.text and "e.g. ids ['1']" in caplog.text


def test_optional_text_columns_may_be_absent(tmp_path):
    header = [c for c in HEADER if c not in ("cover_desc", "caption_en", "likes", "views")]
    corpus = load_corpus(write_corpus(tmp_path / "d", header=header))
    assert len(corpus) == 40 and corpus.texts[0] == corpus.frame["title_en"][0]
