"""Preference pairs (issue 24): `popcorn runs export ID --pairs` writes JSONL that TRL's DPO
trainer reads (prompt / chosen / rejected, conversational), with both loop judges' scores,
the margin and whether the evaluation judge agrees; from batches and from studies."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from llmpopcorn.cli import main
from llmpopcorn.core.settings import Settings
from llmpopcorn.runs.batch import run_batch


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    settings = Settings.resolve(env={}, render=False, out_dir=out)
    queries = ["a corgi learns to surf", "a cat sees snow for the first time"]
    run = run_batch(queries, settings, out_dir=out, variants=4)
    return out, run.batch_id


def export(out, group, *extra):
    return CliRunner().invoke(main, ["runs", "export", group, "--pairs", "--out", str(out), *extra])


def test_pairs_are_trl_dpo_lines_ordered_by_the_reward_judge(batch):
    out, batch_id = batch
    result = export(out, batch_id, "--min-margin", "0")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines and "pairs from 2 queries" in result.stderr
    for line in lines:
        assert [m["role"] for m in line["prompt"]] == ["system", "user"]
        assert line["query"] in line["prompt"][-1]["content"]
        for side in ("chosen", "rejected"):
            (message,) = line[side]
            assert message["role"] == "assistant" and json.loads(message["content"])["title"]
        c, r = line["chosen_scores"], line["rejected_scores"]
        assert c["reward"] - r["reward"] == pytest.approx(line["margin"], abs=1e-3)
        assert line["margin"] > 0
        assert line["judges_agree"] == (c["evaluation"] > r["evaluation"])
        assert line["reward_judge"] == "mmra-stack@reward"
        assert line["evaluation_judge"] == "mmra-stack@evaluation"
        assert line["chosen"] != line["rejected"]
    # 4 distinct variants a query: at most 6 pairs each
    assert len(lines) <= 12
    # a larger margin keeps a subset; dropping disagreements keeps only agreeing pairs
    strict = [
        json.loads(x) for x in export(out, batch_id, "--min-margin", "0.3").stdout.splitlines()
    ]
    assert all(line["margin"] >= 0.3 for line in strict) and len(strict) <= len(lines)
    agreeing = export(out, batch_id, "--min-margin", "0", "--drop-disagreeing")
    kept = [json.loads(x) for x in agreeing.stdout.splitlines()]
    assert all(x["judges_agree"] and x["filtered_by_evaluation_judge"] for x in kept)
    assert len(kept) == sum(x["judges_agree"] for x in lines)


def test_trl_reads_the_file_as_a_conversational_preference_dataset(batch, tmp_path):
    datasets = pytest.importorskip("datasets")
    data_utils = pytest.importorskip("trl.data_utils")
    out, batch_id = batch
    path = tmp_path / "pairs.jsonl"
    assert export(out, batch_id, "--min-margin", "0", "-o", str(path)).exit_code == 0
    dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names)
    assert data_utils.is_conversational(dataset[0])


def test_unknown_ids_and_no_pairs_are_errors_with_a_hint(batch, tmp_path):
    out, _ = batch
    unknown = export(out, "study-0123456789abcdef")
    assert unknown.exit_code == 2 and "runs list" in unknown.output
    single = tmp_path / "single"
    settings = Settings.resolve(env={}, render=False, out_dir=single)
    one = run_batch(["a corgi learns to surf"], settings, out_dir=single, variants=1)
    none = export(single, one.batch_id)
    assert (
        none.exit_code == 2 and "no preference pair" in none.output and "--variants" in none.output
    )
