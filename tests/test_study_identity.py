"""A study cell's identity: every setting that changes a cell's score is in it, and a
setting PE alone reads leaves basic cells alone. Each setting is changed in turn and the
study reruns: the test checks which cells were recomputed."""

import shutil

import pytest

from fakes import TitleLengthScorer, draft_pipeline
from llmpopcorn.core.errors import ConfigError
from llmpopcorn.core.settings import Settings
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.runs.identity import NOT_RESULT, PE_ONLY, RENDER_ONLY
from llmpopcorn.study.bench import StudyPlan, load_queries, run_study
from pe_fixtures import write_study_data

#: a different valid value for every setting
CHANGES = {
    "data_dir": "copy",  # the same corpus in another folder
    "out_dir": "elsewhere",
    "cache_dir": "elsewhere",
    "seed": 7,
    "llm_model": "other-model",
    "llm_runtime": "transformers",
    "llm_adapter": "/nowhere/adapter",
    "llm_base_url": "http://127.0.0.1:9/v1",
    "temperature": 1.1,
    "top_p": 0.5,
    "max_tokens": 2048,
    "post_text": False,
    "max_attempts": 2,
    "llm_timeout": 5.0,
    "llm_max_retries": 1,
    "llm_deadline": 30.0,
    "llm_load_in_4bit": True,
    "llm_rpm": 600.0,
    "max_batch_llm_calls": 1000,
    "render": True,
    "image": "other-image",
    "video": "other-video",
    "device": "cpu",
    "image_options": {"steps": "4"},
    "video_options": {"steps": "4"},
    "video_from_cover": True,
    "max_cost": 1.0,
    "max_batch_cost": 1.0,
    "package": True,
    "c2pa_cert": "cert.pem",
    "c2pa_key": "key.pem",
    "embedder": "minilm",
    "embedder_model": "/nowhere",
    "num_tags": 2,
    "ratio": 0.3,
    "n_refs": 3,
    "category_match": "name",
    "min_category_size": 20,
    "pe_pool": "reference",
    "predictor": "judge",
    "score": False,
}
#: the grid's axes and settings the study refuses to vary: not settings of a cell
NOT_CELL_SETTINGS = {"mode", "llm", "variants", "refine"}  # refine: the refine arm's rounds


@pytest.fixture
def data_dir(tmp_path):
    return write_study_data(tmp_path / "data", ["Something nostalgic"], ["A corgi learns to surf"])


def expected(name: str, settings: Settings) -> set[str]:
    """The modes whose cells a change of ``name`` must recompute (not rendered)."""
    if name in NOT_RESULT or (name in RENDER_ONLY and not settings.render):
        return set()
    if name in PE_ONLY:
        return {"pe"}
    return {"basic", "pe"}


def test_every_setting_is_listed():
    """A new setting must be added here (and to NOT_RESULT / PE_ONLY if it belongs)."""
    public = set(Settings.resolve(env={}).public())
    assert public - NOT_CELL_SETTINGS == set(CHANGES)


def test_each_setting_in_turn_recomputes_exactly_the_cells_it_changes(data_dir, tmp_path):
    from llmpopcorn.enhance.prompts import BasicPromptBuilder

    base = Settings.resolve(
        env={}, render=False, data_dir=data_dir, cache_dir=tmp_path / "cache", embedder="tfidf"
    )
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    plan = StudyPlan(queries=load_queries(data_dir, ["concrete"]), llms=["offline"])
    scorer = TitleLengthScorer()

    def factory(settings):
        # the identity is under test, not PE's retrieval: both modes use one prompt
        return draft_pipeline(settings, scorer=scorer, prompt_builder=BasicPromptBuilder())

    out = tmp_path / "study"
    first = run_study(plan, base, out, pipeline_factory=factory)
    assert first.computed == 2
    for name, value in CHANGES.items():
        if value in ("copy", "elsewhere"):
            value = copy if name == "data_dir" else tmp_path / value
        changed = base.model_copy(update={name: value})
        seen: list[tuple[str, str]] = []
        run_study(
            plan,
            changed,
            out,
            pipeline_factory=factory,
            on_cell=lambda key, arm, status, seen=seen: seen.append((arm.mode, status)),
        )
        recomputed = {mode for mode, status in seen if status in ("ok", "failed")}
        assert recomputed == expected(name, base), name
    with pytest.raises(ConfigError, match="variants"):
        run_study(plan, base.model_copy(update={"variants": 2}), out, pipeline_factory=factory)


QUERIES = [
    "a corgi learns to surf",
    "grandma's secret dumpling recipe",
    "a street food vendor in Bangkok flips a giant omelette",
    "something that makes people feel nostalgic",
    "the final boss fight of a hard game",
    "a quiet morning routine",
]


def planned(settings: Settings, scorer) -> list:
    """Each query's basic-mode prompt messages and category (a basic run's category is
    the first of the judge's ranking): all a basic cell's score depends on besides the
    LLM's reply to those messages."""
    pipeline = Pipeline(settings, scorer=scorer)
    out = []
    for query in QUERIES:
        messages = [m.content for m in pipeline.prompt(query).messages]
        out.append((messages, scorer.rank_categories(query)[0].name))
    return out


def test_pe_only_settings_leave_a_basic_run_alone_and_the_resolver_does_not():
    """With the shipped judge (its category resolver picks a basic run's category), a
    setting in PE_ONLY changes nothing a basic cell reads; the resolver's method and
    minimum size change categories, so they must stay in a basic cell's identity."""
    from llmpopcorn.predict.scorer import PopularityScorer, resolve_model_dir

    def judge(settings):
        return PopularityScorer(
            resolve_model_dir("judge"),
            category_match=settings.category_match,
            min_category_size=settings.min_category_size,
        )

    base = Settings.resolve(env={}, render=False)
    reference = planned(base, judge(base))
    for name in sorted(PE_ONLY):
        value = CHANGES[name]
        changed = base.model_copy(update={name: value})
        assert planned(changed, judge(changed)) == reference, name
    # the resolver's settings move a basic run's category: they are not PE-only
    for name, value in (("category_match", "name"), ("min_category_size", 1500)):
        changed = base.model_copy(update={name: value})
        assert planned(changed, judge(changed)) != reference, name
        assert name not in PE_ONLY
