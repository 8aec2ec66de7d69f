"""The human baseline: real videos of the reference part nearest to each query."""

import numpy as np

from llmpopcorn.core.settings import Settings
from llmpopcorn.core.types import Score
from llmpopcorn.corpus.partition import part_of
from llmpopcorn.study.baseline import human_baseline
from llmpopcorn.study.bench import BenchQuery
from pe_fixtures import corpus_rows, write_corpus


class TitleWordsJudge:
    """A fake judge over tables: log2 comments = number of words in the text."""

    name = "words"
    inputs = {"text_fields": ["title"]}  # reads the title only, as the shipped judges

    def score_table(self, table):
        return [
            Score(predictor=self.name, log2_comments=len(t.split()), expected_comments=0)
            for t in table.texts
        ]


def test_baseline_takes_the_nearest_reference_part_videos_with_truth_and_judge(tmp_path):
    data = write_corpus(tmp_path / "data")
    settings = Settings.resolve(env={}, data_dir=data, embedder="tfidf", cache_dir=tmp_path / "c")
    queries = [
        BenchQuery("concrete-001", "concrete", "a kitten and a puppy"),
        BenchQuery("abstract-001", "abstract", "a game boss fight"),
    ]
    b = human_baseline(queries, settings, scorer=TitleWordsJudge(), k=3)
    assert b["part"] == "reference" and b["videos"] == 6
    rows = {r["video_id"]: r for r in corpus_rows()}
    for entry in b["per_query"]:
        assert len(entry["video_ids"]) == 3
        assert {part_of(v) for v in entry["video_ids"]} == {"reference"}
        expected = [np.log2(rows[v]["comment_count"]) for v in entry["video_ids"]]
        assert np.allclose(entry["true_log2"], expected)
        assert entry["similarity"] == sorted(entry["similarity"], reverse=True)
        titles = [rows[v]["title_en"] for v in entry["video_ids"]]
        assert entry["predicted_log2"] == [len(t.split()) for t in titles]  # title only
    assert b["true_mean_log2"] == np.mean([v for e in b["per_query"] for v in e["true_log2"]])
    assert b["predictor"] == "words" and b["mae_log2"] >= 0 and b["judge_fields"] == ["title"]
    # the fake judge says nothing of its part: it counts as trained on every video, so each
    # baseline video's own title is one it learned from
    assert b["videos_title_in_predictor_data"] == b["videos"]
    none = human_baseline(queries, settings, scorer=None, k=2)
    assert none["predictor"] is None and "mae_log2" not in none
