"""What a study keeps of each cell, and what its outputs say: failures keep their LLM and
reason, independence is checked by content as well as by id, the judge must resolve,
and a study whose every cell failed exits non-zero naming the LLM and model asked."""

import csv
import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from fake_openai_server import FakeOpenAIServer, completion
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import Attempt, BackendUse, Idea, Reference, RunRecord
from llmpopcorn.study.cells import classify_error, failed_result, failure_of, independence
from pe_fixtures import write_study_data


@pytest.fixture
def data_dir(tmp_path):
    return write_study_data(tmp_path / "data", ["Something nostalgic"], ["A corgi learns to surf"])


def record(**kw) -> RunRecord:
    base = {"run_id": "r", "query": "q", "mode": "pe", "seed": 1, "package_version": "0",
            "run_dir": ""}  # fmt: skip
    return RunRecord(**(base | kw))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('the title "X" copies the title of reference video 7 ("X", similarity 1.00)', "copy"),
        ('the title is almost the same as another variant\'s ("Y")', "duplicate"),
        ("the reply was cut off: finish_reason=length", "truncated"),
        ("no answer from http://127.0.0.1/v1 within 5 s a request", "timeout"),
        ("the provider refused: content_filter", "refused"),
        ("cannot connect to http://127.0.0.1:9/v1", "error"),
        (
            "rate limited by http://x/v1 (HTTP 429) (hint: raise --llm-timeout / --llm-deadline)",
            "error",
        ),
        (
            "1 validation error for ChatRequest\nmax_tokens\n  Input should be a valid integer",
            "error",
        ),
    ],
)
def test_error_texts_are_classified(text, reason):
    assert classify_error(text) == reason


def test_a_failed_cell_keeps_its_llm_and_why_it_failed():
    attempts = [Attempt(reply="junk", error="no JSON object found in the reply")]
    rec = record(
        status="failed",
        error="the LLM gave no valid idea in 1 attempt(s); last problem: no JSON object",
        attempts=attempts,
        backends={"llm": BackendUse(kind="llm", name="openai", model="smol-135m", is_llm=True)},
    )
    row = failed_result(rec, rec.error)
    assert (row["ideator"], row["ideator_model"], row["is_llm"]) == ("openai", "smol-135m", True)
    assert row["failure"] == "parse" and row["attempt_reasons"] == ["parse"]
    # the recorded fields win over the text when a record has them
    rec.attempts = [SimpleNamespace(reply="{", error="x", reason="truncated")]
    assert failure_of(rec, rec.error) == "truncated"
    assert failure_of(SimpleNamespace(failure="timeout", error="anything")) == "timeout"
    # an idea was made but the judge failed
    scored = record(status="failed", error="boom", idea=Idea(title="t", cover_prompt="c",
                                                             video_prompt="v"))  # fmt: skip
    assert failure_of(scored, "boom") == "score"


class MemoryJudge:
    """A judge with a retrieval memory (ids) trained on a corpus part."""

    def __init__(self, memory, part):
        self._memory, self.part = memory, part

    def memory_ids(self):
        return list(self._memory)


def test_independence_counts_ids_and_normalised_titles(data_dir):
    from llmpopcorn.corpus.partition import in_part
    from llmpopcorn.corpus.table import load_corpus

    frame = load_corpus(data_dir).frame
    ids = frame["video_id"].astype(str).tolist()
    judge_ids = [v for v, j in zip(ids, in_part(ids, "judge"), strict=True) if j]
    title_of = dict(zip(ids, frame["title_en"], strict=True))
    # two references from outside the judge's memory: one with a new title, one whose
    # title (in another case and spacing) is that of a video the judge trained on
    refs = [
        Reference(video_id="new-1", title="A title nobody posted"),
        Reference(video_id="new-2", title="  " + title_of[judge_ids[0]].upper() + "!"),
        Reference(video_id=judge_ids[1], title=title_of[judge_ids[1]]),
    ]
    rec = record(references=refs)
    pipeline = SimpleNamespace(
        settings=Settings.resolve(env={}, data_dir=data_dir),
        scorer=MemoryJudge(judge_ids, "judge"),
    )
    out = independence(rec, pipeline)
    assert out["refs_shown"] == 3
    assert out["refs_in_judge_memory"] == 1  # by id: only the third
    assert out["refs_title_in_judge_data"] == 2  # by content: the second too
    assert "judge memory" in out["overlap_method"] and "titles" in out["overlap_method"]

    # no memory to check: the ids are checked against the part the judge trained on
    class NoMemory:
        part = "all"

    pipeline.scorer = NoMemory()
    out = independence(rec, pipeline)
    assert out["refs_in_judge_memory"] == 3 and "training part (all)" in out["overlap_method"]


def invoke(args, env=None):
    from llmpopcorn.cli import main

    return CliRunner().invoke(main, ["bench", *args], env={"POPCORN_SCORE": "false", **(env or {})})


def test_a_study_whose_every_cell_failed_exits_non_zero_and_names_its_llm(data_dir, tmp_path):
    out = tmp_path / "study"
    with FakeOpenAIServer(models=["smol-135m"]) as server:
        server.queue(200, completion("I would rather not answer in JSON.", model="smol-135m"))
        result = invoke(
            ["--data", str(data_dir), "--llm", "openai", "--llm-base-url", server.url,
             "--llm-model", "smol-135m", "--mode", "basic", "--max-attempts", "1",
             "--seeds", "1,2", "--baseline-k", "0", "--no-render", "--out", str(out)],
            {"POPCORN_LLM_API_KEY": "sk-test"},
        )  # fmt: skip
    assert result.exit_code != 0, result.output
    assert "the study has no results: all 4 cells failed" in result.stderr
    assert "openai (smol-135m)" in result.stderr and "parse 4" in result.stderr
    assert "Traceback" not in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["banner"].startswith("NO CELL FINISHED") and "smol-135m" in summary["banner"]
    assert summary["ideators"] == [{"name": "openai", "model": "smol-135m", "is_llm": True}]
    assert summary["settings"]["llm"] == "openai" and summary["plan"]["llms"] == ["openai"]
    assert summary["attrition"][0]["invalid_by_reason"] == {"parse": 4}
    for name in ("summary.md", "summary.html"):
        assert "NO CELL FINISHED" in (out / name).read_text()
    with open(out / "results.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["ideator"], r["ideator_model"], r["is_llm"], r["failure"]) for r in rows} == {
        ("openai", "smol-135m", "True", "parse")
    }


def test_the_study_refuses_to_fall_back_from_a_missing_judge(data_dir, tmp_path, monkeypatch):
    from llmpopcorn.core.errors import DataError
    from llmpopcorn.predict import scorer

    real = scorer.resolve_model_dir

    def resolve(name=None):
        if name == "judge":
            raise DataError("no model named 'judge'", "")
        return real(name)

    monkeypatch.setattr(scorer, "resolve_model_dir", resolve)
    result = invoke(["--data", str(data_dir), "--mode", "basic", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "independent judge 'judge' cannot be found" in result.stderr
    assert "hint:" in result.stderr and not (tmp_path / "s" / "store.sqlite").exists()
