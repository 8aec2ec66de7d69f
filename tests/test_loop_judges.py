"""The loop's two judges (issue 24): the judge part split by id into a reward half and an
evaluation half, the shipped judges trained on them, and their independence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmpopcorn.core.errors import ConfigError
from llmpopcorn.core.types import Idea
from llmpopcorn.corpus.partition import (
    LOOP_PARTS,
    corpus_share,
    describe,
    in_part,
    loop_part_of,
    part_of,
)
from llmpopcorn.predict.judges import LoopJudges, memory_overlap
from llmpopcorn.predict.scorer import MODELS_DIR
from pe_fixtures import write_corpus

IDS = [str(i) for i in range(4000)]


def test_the_judge_part_splits_into_disjoint_halves_by_id_only():
    judge = in_part(IDS, "judge")
    reward, evaluation = in_part(IDS, "reward"), in_part(IDS, "evaluation")
    assert not (reward & evaluation).any()
    assert ((reward | evaluation) == judge).all()  # exactly the judge part
    assert not (reward & in_part(IDS, "reference")).any()
    # about half each, as declared
    assert abs(reward.sum() / judge.sum() - 0.5) < 0.05
    assert abs(reward.mean() - corpus_share("reward")) < 0.03
    # stable: a video's half depends on its id, not on the order or the other rows
    shuffled = list(reversed(IDS))
    assert (in_part(shuffled, "reward")[::-1] == reward).all()
    assert [loop_part_of(v) for v in IDS[:50]] == [loop_part_of(v) for v in IDS[:50]]
    assert all(loop_part_of(v) is None for v in IDS if part_of(v) == "reference")


def test_unknown_part_is_refused_and_loop_parts_describe_their_scheme():
    with pytest.raises(ConfigError):
        in_part(IDS, "rewards")
    info = describe("evaluation")
    assert info["part"] == "evaluation" and "loop-judges" in info["loop_scheme"]
    assert "loop_scheme" not in describe("judge")
    assert LOOP_PARTS == ("reward", "evaluation")


@pytest.mark.parametrize("role", ["reward", "evaluation"])
def test_the_shipped_loop_judges_were_trained_on_their_half_only(role):
    config = json.loads((MODELS_DIR / role / "config.json").read_text())
    assert config["train"]["partition"]["part"] == role
    size = sum(p.stat().st_size for p in (MODELS_DIR / role).iterdir())
    assert size < 12 * 2**20
    judges = LoopJudges.load()
    memory = getattr(judges, role).memory_ids()
    assert len(memory) > 1000
    assert in_part(memory, role).all()  # every remembered video is of its own half


def test_both_judges_score_an_idea_and_say_who_did_what():
    judges = LoopJudges.load()
    idea = Idea(title="A corgi learns to surf", cover_prompt="c", video_prompt="v")
    judged = judges.score(idea, query="a corgi", category="Animal")
    brief = judged.brief()
    assert brief["reward"]["predictor"] == "mmra-stack@reward"
    assert brief["evaluation"]["predictor"] == "mmra-stack@evaluation"
    assert brief["reward"]["log2_comments"] != brief["evaluation"]["log2_comments"]
    info = judges.describe()
    assert info["reward"]["part"] == "reward" and info["evaluation"]["part"] == "evaluation"
    overlap = judges.independence()
    assert overlap["ids"]["reward_and_evaluation"] == 0
    assert overlap["ids"]["reward_and_references"] == 0
    assert overlap["ids"]["evaluation_and_references"] == 0
    assert overlap["titles"] is None and "no corpus" in overlap["titles_note"]


def test_overlap_counts_shared_ids_and_shared_normalised_titles(tmp_path):
    data = write_corpus(tmp_path / "data")
    import pandas as pd

    frame = pd.read_csv(data / "microlens" / "videos.csv", dtype={"video_id": str})
    ids = frame["video_id"].tolist()
    reward = [v for v in ids if loop_part_of(v) == "reward"]
    # a judge whose memory holds a reference video is caught by id
    leaked = reward + [v for v in ids if part_of(v) == "reference"][:2]
    out = memory_overlap(leaked, [v for v in ids if loop_part_of(v) == "evaluation"])
    assert out["ids"]["reward_and_references"] == 2
    assert out["ids"]["reward_and_evaluation"] == 0
    # the same title (up to case and punctuation) in two parts is caught by title
    first_ref = next(v for v in ids if part_of(v) == "reference")
    first_reward = reward[0]
    title = frame.loc[frame.video_id == first_reward, "title_en"].iloc[0]
    frame.loc[frame.video_id == first_ref, "title_en"] = title.upper() + "!!"
    frame.to_csv(data / "microlens" / "videos.csv", index=False)
    # ... and that reference video is no longer in the reference pool (its title is the
    # judge part's), so the pool PE and refinement draw from shares no title with a half
    out = memory_overlap(reward, [], data_dir=data)
    assert out["titles"]["reward_and_references"] == 0
    assert np.isfinite(out["titles"]["distinct"]["reward"])
    # a judge trained on every part is caught by title
    out = memory_overlap(reward, [], parts=("all", "evaluation"), data_dir=data)
    assert out["titles"]["reward_and_references"] == out["titles"]["distinct"]["references"] > 0
