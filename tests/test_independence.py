"""Independence by content (issue 21, item 5).

The corpus is split by video id, so one title posted as two videos can sit in the judge
part and in the reference part. The reference pool (what PE, refinement and the human
baseline draw from) leaves such videos out; the overlap checks count ids, normalised
titles and near-duplicates; the study refuses a judge that learned from its pool unless
``--allow-dependent-judge`` is given, and then says so. Tests plant a title shared across
parts in the tiny corpus; the last one checks the shipped judges on the real MicroLens
table when it is present (and skips otherwise).
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from llmpopcorn.backends.base import Embedder
from llmpopcorn.core.copycheck import normalise_title
from llmpopcorn.core.errors import ConfigError
from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import Reference
from llmpopcorn.corpus.independence import (
    NEAR_DUPLICATE_COSINE,
    judge_data,
    pool_overlap,
    reference_overlap,
)
from llmpopcorn.corpus.partition import (
    POOL_RULE,
    in_part,
    in_pool,
    part_of,
    part_titles,
    pool_titles,
)
from llmpopcorn.corpus.table import load_corpus
from pe_fixtures import corpus_rows, real_data_dir, write_corpus

# -- a corpus with one title in both parts ----------------------------------------------


def planted_rows() -> tuple[list[dict], str, str]:
    """The tiny corpus with one reference-part video retitled as a judge-part video of
    its category (another case, spacing and punctuation: the same normalised title)."""
    rows = corpus_rows()
    animal = [r for r in rows if r["partition"] == "Animal"]
    ref = next(r for r in animal if part_of(r["video_id"]) == "reference")
    judge = next(r for r in animal if part_of(r["video_id"]) == "judge")
    ref["title_en"] = ref["cover_desc"] = "  " + str(judge["title_en"]).upper() + "!!"
    return rows, str(ref["video_id"]), str(judge["video_id"])


@pytest.fixture
def planted(tmp_path):
    rows, ref_id, judge_id = planted_rows()
    data = write_corpus(tmp_path / "data", rows)
    prompts = data / "prompts"
    prompts.mkdir()
    (prompts / "abstract_prompts.txt").write_text("Something nostalgic\n")
    (prompts / "concrete_prompts.txt").write_text("A cute kitten and a puppy\n")
    return SimpleNamespace(data=data, ref=ref_id, judge=judge_id)


def pe_settings(data, tmp_path, **kw) -> Settings:
    return Settings.resolve(
        env={},
        mode="pe",
        render=False,
        data_dir=data,
        embedder="tfidf",
        cache_dir=tmp_path / "cache",
        min_category_size=1,
        **kw,
    )


def test_the_reference_pool_leaves_out_titles_of_the_judge_part(planted):
    frame = load_corpus(planted.data).frame
    ids = frame["video_id"].astype(str).tolist()
    pool = dict(zip(ids, in_pool(frame, "reference"), strict=True))
    assert part_of(planted.ref) == "reference"  # the split by id is unchanged ...
    assert not pool[planted.ref]  # ... but the duplicate never enters the pool
    assert all(pool[v] for v in ids if part_of(v) == "reference" and v != planted.ref)
    assert not any(pool[v] for v in ids if part_of(v) == "judge")
    assert not pool_titles(frame, "reference") & part_titles(frame, "judge")
    assert in_pool(frame, "all").all() and in_part(ids, "judge").sum() == 40 - sum(
        part_of(v) == "reference" for v in ids
    )
    with pytest.raises(ConfigError, match="unknown reference pool"):
        in_pool(frame, "judge")


def test_pe_never_shows_a_reference_whose_title_the_judge_part_holds(planted, tmp_path):
    from llmpopcorn.enhance.pe import PEPromptBuilder

    frame = load_corpus(planted.data).frame
    title = frame.loc[frame["video_id"] == planted.judge, "title_en"].iloc[0]

    def shown(pool):
        builder = PEPromptBuilder.from_settings(
            pe_settings(planted.data, tmp_path, pe_pool=pool, n_refs=12)
        )
        prompt = builder.build(title)
        return {r.video_id for r in prompt.references}, prompt.settings["pool"]

    everything, _ = shown("all")
    assert planted.ref in everything  # the nearest video of all: the same title
    refs, recorded = shown("reference")
    assert refs and planted.ref not in refs
    assert {part_of(v) for v in refs} == {"reference"}
    assert recorded["pool"] == POOL_RULE  # the record says which rule made the pool


def test_the_human_baseline_and_refinement_draw_from_the_pool(planted, tmp_path):
    from llmpopcorn.pipeline.refine import category_examples
    from llmpopcorn.study.baseline import human_baseline
    from llmpopcorn.study.bench import load_queries

    settings = pe_settings(planted.data, tmp_path)
    out = human_baseline(load_queries(planted.data), settings, k=40)
    shown = {v for q in out["per_query"] for v in q["video_ids"]}
    assert shown and planted.ref not in shown
    assert {part_of(v) for v in shown} == {"reference"}
    record = SimpleNamespace(references=[])
    examples, source = category_examples(record, settings, "Animal")
    assert examples and planted.ref not in {r.video_id for r in examples}
    assert "reference part" in source


# -- counting: ids, titles, near-duplicates -----------------------------------------------

VOCAB = [f"w{i}" for i in range(64)]


class TinyEmbedder(Embedder):
    """Bag of words over a fixed 64-word vocabulary (case and punctuation ignored),
    L2-normalised: two titles of m distinct words sharing n have cosine n / m."""

    name = "tiny"

    @property
    def id(self) -> str:
        return "tiny-bow-64"

    def embed(self, texts):
        out = np.zeros((len(texts), len(VOCAB)), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"w\d+", text.lower()):
                out[i, VOCAB.index(word)] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


def ids_of(part: str, n: int) -> list[str]:
    found = (f"v{i}" for i in range(1000) if part_of(f"v{i}") == part)
    return [next(found) for _ in range(n)]


def test_overlap_counts_ids_titles_and_near_duplicates_with_a_tiny_embedder(tmp_path):
    from llmpopcorn.corpus.index import CorpusIndex

    words = " ".join(VOCAB[:30])  # a judge-part video of 30 words
    judge_ids, ref_ids = ids_of("judge", 3), ids_of("reference", 4)
    titles = {
        judge_ids[0]: words,
        judge_ids[1]: " ".join(VOCAB[40:50]),
        judge_ids[2]: "w60 w61 w62",
        ref_ids[0]: " ".join(VOCAB[:29] + ["w63"]),  # 29 of 30 words: cosine 0.967
        ref_ids[1]: " ".join(VOCAB[40:49] + ["w59"]),  # 9 of 10 words: cosine 0.9
        ref_ids[2]: "W60 w61, w62!",  # the same normalised title as a judge video
        ref_ids[3]: "w55 w56 w57",  # nothing like any judge video
    }
    rows = [
        {"video_id": v, "title_en": t, "cover_desc": t, "caption_en": "", "partition": "A",
         "likes": 1, "views": 1, "comment_count": 10 + i}
        for i, (v, t) in enumerate(titles.items())
    ]  # fmt: skip
    corpus = load_corpus(write_corpus(tmp_path / "data", rows))
    index = CorpusIndex.open(corpus, TinyEmbedder(), tmp_path / "cache")
    judge = judge_data(corpus, "judge")
    refs = [Reference(video_id=v, title=titles[v]) for v in ref_ids]

    found = reference_overlap(refs, judge, index=index)
    assert (found["by_id"], found["by_title"], found["in_memory"]) == (0, 1, None)
    assert found["near_duplicates"] == 2 and found["cosine"] == NEAR_DUPLICATE_COSINE == 0.95
    assert reference_overlap(refs, judge, index=index, threshold=0.85)["near_duplicates"] == 3
    assert reference_overlap(refs, judge)["near_duplicates"] is None  # no index: not checked
    # a judge whose memory holds a reference is caught by id (and that reference is then a
    # near-duplicate of itself)
    leaky = judge_data(corpus, "judge", memory=[*judge_ids, ref_ids[3]])
    found = reference_overlap(refs, leaky, index=index)
    assert (found["in_memory"], found["by_id"], found["near_duplicates"]) == (1, 1, 3)

    # the pool leaves the same-title video out; what is left only near-duplicates it
    pool = pool_overlap(corpus, "reference", judge, index=index)
    assert pool["pool_videos"] == 3 and (pool["by_id"], pool["by_title"]) == (0, 0)
    assert pool["near_duplicates"] == 1 and pool["dependent"] is False
    everything = pool_overlap(corpus, "all", judge, index=index)
    # every judge video by id, and by title the reference video sharing one too
    assert (everything["by_id"], everything["by_title"]) == (3, 4) and everything["dependent"]


# -- the study refuses a dependent judge ---------------------------------------------------


class FakeJudge:
    """A judge trained on ``part`` that remembers ``memory``."""

    name = "fake-judge"

    def __init__(self, part, memory):
        self.part, self._memory = part, list(memory)

    def memory_ids(self):
        return self._memory


def test_the_study_refuses_a_judge_that_learned_from_its_pool_unless_allowed(planted, tmp_path):
    from llmpopcorn.study.independence import judge_independence, require_independent
    from llmpopcorn.study.report import no_llm_banner

    settings = pe_settings(planted.data, tmp_path, pe_pool="reference")
    ids = load_corpus(planted.data).frame["video_id"].astype(str).tolist()
    judge_ids = [v for v in ids if part_of(v) == "judge"]

    # a judge trained on the judge part: independent of the pool by id and title, even
    # with a title shared across the parts
    facts = judge_independence(settings, ["basic", "pe"], FakeJudge("judge", judge_ids))
    assert facts["checked"] and not facts["dependent"]
    assert require_independent(facts, allow=False)["allowed_dependent"] is False
    [pool] = facts["pools"]
    assert (pool["pool"], pool["by_id"], pool["by_title"]) == ("reference", 0, 0)
    assert pool["pool_videos"] == sum(part_of(v) == "reference" for v in ids) - 1

    # a judge trained on every video knows the whole pool
    facts = judge_independence(settings, ["basic", "pe"], FakeJudge("all", ids))
    assert facts["dependent"] and facts["pools"][0]["by_id"] == pool["pool_videos"]
    with pytest.raises(ConfigError) as err:
        require_independent(facts, allow=False)
    assert "not independent of the references PE may show" in err.value.message
    assert "--allow-dependent-judge" in err.value.hint and "--pe-pool reference" in err.value.hint
    allowed = require_independent(facts, allow=True)
    assert allowed["allowed_dependent"] is True
    banner = no_llm_banner({"total": 1, "ok": 1, "independence": allowed})
    assert banner.startswith("DEPENDENT JUDGE (--allow-dependent-judge)")

    # the refine arm shows examples from the reference pool; basic alone shows none; the
    # pool 'all' holds the judge part itself
    assert judge_independence(settings, ["basic"], FakeJudge("all", ids))["checked"] is False
    refine = judge_independence(settings, ["basic", "refine"], FakeJudge("judge", judge_ids))
    assert [p["pool"] for p in refine["pools"]] == ["reference"]
    every = pe_settings(planted.data, tmp_path, pe_pool="all")
    assert judge_independence(every, ["pe"], FakeJudge("judge", judge_ids))["dependent"]


def bench(args):
    from llmpopcorn.cli import main

    return CliRunner().invoke(main, ["bench", *args])


def test_bench_refuses_then_runs_with_the_flag_and_says_so(planted, tmp_path):
    out = tmp_path / "study"
    args = ["--data", str(planted.data), "--mode", "pe", "--refs", "3", "--queries", "concrete",
            "--no-render", "--baseline-k", "0", "--embedder", "tfidf", "--min-category-size",
            "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]  # fmt: skip
    # the shipped default predictor was trained on every video
    refused = bench([*args, "--predictor", "default"])
    assert refused.exit_code == 2, refused.output
    assert "error: the judge" in refused.stderr and "hint:" in refused.stderr
    assert "--allow-dependent-judge" in refused.stderr and "Traceback" not in refused.output
    assert not list(out.glob("runs/*"))  # refused before any cell

    ran = bench([*args, "--predictor", "default", "--allow-dependent-judge", "--json"])
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.stdout)
    assert "DEPENDENT JUDGE" in summary["banner"] and "NO LLM WAS USED" in summary["banner"]
    assert summary["independence"]["allowed_dependent"] is True
    assert "DEPENDENT JUDGE" in (out / "summary.md").read_text()
    assert summary["judge"]["references_in_judge_memory"] >= 1
    # the run's record says it too: every reference's title is one the judge learned from
    record = json.loads(next(out.glob("runs/*/record.json")).read_text())
    block = record["score"]["extra"]["independence"]
    assert block["references_title_in_judge_data"] == block["references"] == 3
    assert block["references_near_judge_data"] == 3 and block["near_duplicate_cosine"] == 0.95
    assert any(n.startswith("Judge independence: ") for n in record["notes"])


def test_bench_with_the_shipped_judge_shows_no_shared_title(planted, tmp_path):
    out = tmp_path / "study"
    ran = bench(["--data", str(planted.data), "--mode", "pe", "--refs", "12", "--queries",
                 "concrete", "--no-render", "--baseline-k", "0", "--embedder", "tfidf",
                 "--min-category-size", "1", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(out), "--json"])  # fmt: skip
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.stdout)
    judge = summary["judge"]
    assert judge["predictors"] == ["mmra-stack@judge"] and judge["pe_pools"] == ["reference"]
    assert judge["references_shown"] > 0 and judge["zero_overlap"]
    assert judge["references_title_in_judge_data"] == 0
    assert judge["references_near_judge_data"] is not None
    assert summary["independence"]["dependent"] is False
    assert "DEPENDENT" not in summary["banner"]
    record = json.loads(next(out.glob("runs/*/record.json")).read_text())
    assert planted.ref not in {r["video_id"] for r in record["references"]}
    block = record["score"]["extra"]["independence"]  # the record's own count
    assert block["references"] == judge["references_shown"]
    assert (block["references_in_judge_memory"], block["references_title_in_judge_data"]) == (0, 0)
    assert block["references_near_judge_data"] is not None
    assert not any(n.startswith("Judge independence") for n in record["notes"])


def test_a_pe_cell_made_from_another_pool_rule_is_another_cell():
    from llmpopcorn.runs.identity import cell_identity

    def ident(**kw):
        return cell_identity(
            Settings.resolve(env={}, **kw), llm_model="m", predictor=None, corpus_sha256="c"
        )

    assert ident(mode="pe", pe_pool="reference")["reference_pool"] == POOL_RULE
    assert "reference_pool" not in ident(mode="pe", pe_pool="all")
    assert "reference_pool" not in ident(mode="basic")


# -- the shipped judges on the real table ----------------------------------------------------


REAL_DATA = real_data_dir()


@pytest.mark.skipif(REAL_DATA is None, reason="no MicroLens data (POPCORN_DATA or ../shared/data)")
def test_the_shipped_judges_know_nothing_of_the_real_reference_pool():
    from llmpopcorn.predict.scorer import PopularityScorer, resolve_model_dir

    corpus = load_corpus(REAL_DATA)
    frame = corpus.frame
    reference = in_part(frame["video_id"], "reference")
    judge_titles = part_titles(frame, "judge")
    shared = sum(
        normalise_title(t) in judge_titles for t in frame["title_en"][reference].astype(str)
    )
    assert shared > 0  # the real table has the same title in both parts ...
    pool = in_pool(frame, "reference")
    assert pool.sum() == reference.sum() - shared  # ... and the pool leaves those out
    for name in ("judge", "reward", "evaluation"):
        scorer = PopularityScorer(resolve_model_dir(name))
        found = pool_overlap(corpus, "reference", judge_data(corpus, scorer.part,
                                                             scorer.memory_ids()))  # fmt: skip
        assert found["pool_videos"] == pool.sum()
        assert (found["in_memory"], found["by_id"], found["by_title"]) == (0, 0, 0), name
