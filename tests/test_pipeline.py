import json

import pytest

from fakes import TitleLengthScorer, draft_pipeline
from llmpopcorn.backends.base import ImageBackend
from llmpopcorn.backends.llm.fake import FakeLLM
from llmpopcorn.backends.media import probe_mp4
from llmpopcorn.core.errors import InvalidReplyError, RenderError, UnknownBackendError
from llmpopcorn.core.settings import Settings
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.pipeline.report import load_record

GOOD = json.dumps(
    {
        "title": "Corgi <b>surfs</b> & wins",
        "cover_prompt": "a corgi on a surfboard",
        "video_prompt": "the corgi rides a wave",
    }
)


def small_pipeline(out_dir, llm=None, **kw):
    settings = Settings.resolve(env={}, out_dir=out_dir, score=False, **kw)
    return draft_pipeline(settings, size=(144, 256), fps=8, llm=llm)


def test_offline_make_writes_everything(out_dir):
    record = small_pipeline(out_dir).make("a corgi learns to surf")
    run_dir = out_dir.resolve() / record.run_dir.split("/")[-1]
    assert record.status == "ok"
    for name in ("record.json", "cover.png", "clip.mp4", "report.html"):
        assert (run_dir / name).exists(), name
    saved = load_record(run_dir)
    assert saved.idea == record.idea and saved.status == "ok"
    assert saved.backends["llm"].name == "offline" and saved.backends["llm"].is_llm is False
    assert any("No LLM was used" in n for n in saved.notes)
    assert saved.messages[0].role == "system" and saved.attempts[0].reply
    assert set(saved.timings) >= {"prompt", "ideate", "cover", "clip", "score"}
    assert saved.settings["seed"] == 42 and saved.package_version
    clip = saved.artifact("clip")
    assert clip.meta["frames"] == 24 and clip.bytes == (run_dir / "clip.mp4").stat().st_size
    info = probe_mp4(run_dir / "clip.mp4")
    assert info["frames"] == 24 and abs(info["seconds"] - 3.0) < 1e-6


def test_same_seed_same_idea_and_cover(out_dir):
    a = small_pipeline(out_dir).make("a corgi learns to surf")
    b = small_pipeline(out_dir).make("a corgi learns to surf")
    assert a.run_dir != b.run_dir
    assert a.idea == b.idea
    cover = lambda r: (out_dir.resolve() / r.run_dir.split("/")[-1] / "cover.png").read_bytes()  # noqa: E731
    assert cover(a) == cover(b)


def test_report_escapes_model_and_user_text(out_dir):
    record = small_pipeline(out_dir, llm=FakeLLM([GOOD])).make("<script>alert(1)</script>")
    html = (out_dir.resolve() / record.run_dir.split("/")[-1] / "report.html").read_text()
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html
    assert "<b>surfs</b>" not in html and "&lt;b&gt;surfs" in html
    assert "data:image/png;base64," in html and "data:video/mp4;base64," in html


def test_invalid_replies_fail_but_keep_raw_replies(out_dir):
    pipeline = small_pipeline(out_dir, llm=FakeLLM(["garbage one", "garbage two"]), max_attempts=2)
    with pytest.raises(InvalidReplyError):
        pipeline.make("a corgi learns to surf")
    (run_dir,) = out_dir.iterdir()
    saved = load_record(run_dir)
    assert saved.status == "failed" and "2 attempt" in saved.error
    assert [a.reply for a in saved.attempts] == ["garbage one", "garbage two"]
    assert (run_dir / "report.html").exists()


class ExplodingImage(ImageBackend):
    name = "exploding"

    def __init__(self, exc):
        self.exc = exc

    def generate(self, request):
        raise self.exc


@pytest.mark.parametrize(
    "exc, message, status",
    [
        (RenderError("GPU on fire"), "GPU on fire", "failed"),
        (KeyboardInterrupt(), "interrupted", "interrupted"),
    ],
)
def test_failure_mid_run_keeps_the_idea(out_dir, exc, message, status):
    pipeline = small_pipeline(out_dir, llm=FakeLLM([GOOD]))
    pipeline._given["image"] = ExplodingImage(exc)
    with pytest.raises(type(exc)):
        pipeline.make("a corgi learns to surf")
    (run_dir,) = out_dir.iterdir()
    saved = load_record(run_dir)
    assert saved.status == status and message in saved.error
    assert saved.idea is not None and saved.idea.title.startswith("Corgi")
    assert saved.finished is not None


def test_unknown_backend_lists_the_known_ones(out_dir):
    pipeline = Pipeline(Settings.resolve(env={}, out_dir=out_dir, llm="gpt-17"))
    with pytest.raises(UnknownBackendError) as info:
        pipeline.make("a corgi")
    assert "offline" in info.value.hint and "deepseek" in info.value.hint


def test_secret_never_reaches_the_record(out_dir, monkeypatch):
    secret = "sk-live-DO-NOT-LEAK-42"
    monkeypatch.setenv("POPCORN_LLM_API_KEY", secret)
    settings = Settings.resolve(out_dir=out_dir, score=False)
    assert settings.api_key() == secret
    record = draft_pipeline(settings, size=(144, 256), fps=8).make("a corgi")
    run_dir = out_dir.resolve() / record.run_dir.split("/")[-1]
    for name in ("record.json", "report.html"):
        assert secret not in (run_dir / name).read_text()


def test_prompt_only_does_not_call_the_llm(out_dir):
    llm = FakeLLM([])
    prompt = small_pipeline(out_dir, llm=llm).prompt("  a corgi\n learns to surf ")
    assert prompt.query == "a corgi learns to surf" and not llm.requests
    assert not list(out_dir.iterdir())


def _idea(title):
    return json.dumps({"title": title, "cover_prompt": "c", "video_prompt": "v"})


def test_variants_are_ranked_by_the_predictor_and_the_best_is_rendered(out_dir):
    llm = FakeLLM(
        [
            _idea("short"),
            _idea("the longest title here"),
            "junk",
            "junk",
            "junk",
            _idea("medium one"),
        ]
    )
    settings = Settings.resolve(env={}, out_dir=out_dir, variants=4, seed=10)
    pipeline = draft_pipeline(settings, llm=llm, scorer=TitleLengthScorer())
    record = pipeline.make("a corgi")
    assert record.idea.title == "the longest title here"
    assert [v.seed for v in record.variants] == [11, 13, 10, 12]
    assert record.variants[-1].error and "no valid idea" in record.variants[-1].error
    assert [r.seed for r in llm.requests][:2] == [10, 11]
    assert record.score.log2_comments == pytest.approx(2.2)
    assert any("Best of 4 variants" in n for n in record.notes)
    html = (out_dir.resolve() / record.run_dir.split("/")[-1] / "report.html").read_text()
    assert "Variants ranked" in html and "medium one" in html


def test_variants_need_a_predictor(out_dir):
    settings = Settings.resolve(env={}, out_dir=out_dir, variants=3, score=False)
    from llmpopcorn.core.errors import ConfigError

    with pytest.raises(ConfigError, match="needs the popularity predictor"):
        draft_pipeline(settings).make("q")
