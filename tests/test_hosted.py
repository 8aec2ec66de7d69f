"""Hosted generators against a local fake server speaking fal's queue and OpenAI Images.

No test touches the network: every URL is 127.0.0.1, and waits go through a fake clock.
"""

from __future__ import annotations

import json
import logging

import pytest

from fake_hosted_server import FakeClock, FakeHostedServer, mp4_bytes
from llmpopcorn.backends.base import ImageRequest, VideoRequest
from llmpopcorn.backends.hosted.base import (
    ContentRefusedError,
    CostLimitError,
    HostedAuthError,
    HostedError,
    HostedTimeoutError,
    check_batch_cost,
    estimate_run_cost,
)
from llmpopcorn.backends.hosted.fal import (
    FalFlux,
    FalImageOptions,
    FalKling,
    FalLTX,
    FalVideoOptions,
    FalWan,
)
from llmpopcorn.core.errors import ConfigError
from llmpopcorn.core.settings import Settings

KEY = "fal-secret-key-123"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Every connection these tests open goes to this machine: anything else fails."""
    import socket

    connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        assert host in ("127.0.0.1", "::1", "localhost"), f"network access to {host}"
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="module")
def clip_bytes() -> bytes:
    return mp4_bytes()


@pytest.fixture
def server(clip_bytes):
    with FakeHostedServer() as srv:
        srv.files["clip.mp4"] = clip_bytes
        yield srv


def fal_image(server, clock, **opts):
    options = FalImageOptions(base_url=server.url, **opts)
    return FalFlux(options, api_key=KEY, sleep=clock.sleep, clock=clock)


def fal_video(cls, server, clock, *, from_cover=False, **opts):
    backend = cls(
        FalVideoOptions(base_url=server.url, **opts), api_key=KEY, sleep=clock.sleep, clock=clock
    )
    backend.from_cover = from_cover
    return backend


# -- success and the protocol ----------------------------------------------------------


def test_fal_image_submits_polls_downloads_and_crops_to_9x16(server):
    clock = FakeClock()
    backend = fal_image(server, clock)
    cover = backend.generate(ImageRequest(prompt="a corgi surfing", seed=7))
    assert cover.width * 16 == cover.height * 9
    (submit,) = server.of("POST")
    assert submit["path"] == "/fal-ai/flux/schnell"
    assert submit["headers"]["Authorization"] == f"Key {KEY}"
    assert submit["json"]["prompt"] == "a corgi surfing"
    assert submit["json"]["seed"] == 7
    assert submit["json"]["image_size"] == {"width": 720, "height": 1280}
    # status and result use the app id without the subpath, as documented
    assert server.of("GET", "/fal-ai/flux/requests/req-1/status")
    use = backend.describe()
    assert use.model == "fal-ai/flux/schnell"
    last = use.options["last_call"]
    assert last["request_id"] == "req-1" and last["cost_estimate_usd"] == pytest.approx(
        0.003 * 720 * 1280 / 1e6
    )
    assert KEY not in json.dumps(use.model_dump())


def test_fal_video_text_to_video_decodes_the_mp4(server):
    clock = FakeClock()
    backend = fal_video(FalLTX, server, clock)
    clip = backend.generate(VideoRequest(prompt="waves", seed=3))
    (submit,) = server.of("POST")
    assert submit["path"] == "/fal-ai/ltxv-13b-098-distilled"
    assert submit["json"]["num_frames"] == 73 and submit["json"]["aspect_ratio"] == "9:16"
    assert "image_url" not in submit["json"]
    assert clip.fps == pytest.approx(16.0)
    assert len(clip.frames) == 48  # 3 s of the 5 s file: decoding stops early
    assert clip.frames[0].shape == (128, 72, 3)
    assert clip.meta["request_id"] == "req-1"
    assert clip.meta["model"] == "fal-ai/ltxv-13b-098-distilled"
    assert clip.meta["cost_estimate_usd"] == pytest.approx(0.02 * 73 / 24)


def test_fal_image_to_video_sends_the_cover_to_the_i2v_endpoint(server):
    from PIL import Image

    clock = FakeClock()
    backend = fal_video(FalWan, server, clock, from_cover=True)
    cover = Image.new("RGB", (90, 160), (10, 20, 30))
    clip = backend.generate(VideoRequest(prompt="waves", cover=cover))
    (submit,) = server.of("POST")
    assert submit["path"] == "/fal-ai/wan/v2.2-a14b/image-to-video"
    assert submit["json"]["image_url"].startswith("data:image/png;base64,")
    assert submit["json"]["num_frames"] == 49 and submit["json"]["frames_per_second"] == 16
    assert clip.meta["from_cover"] is True
    # Wan bills video seconds at 16 fps: 49 frames at 720p
    assert clip.meta["cost_estimate_usd"] == pytest.approx(0.08 * 49 / 16)


def test_from_cover_without_a_cover_fails_before_any_call(server):
    backend = fal_video(FalWan, server, FakeClock(), from_cover=True)
    with pytest.raises(Exception, match="no cover"):
        backend.generate(VideoRequest(prompt="waves"))
    assert server.requests == []


def test_kling_sends_a_duration_not_frames(server):
    backend = fal_video(FalKling, server, FakeClock())
    backend.generate(VideoRequest(prompt="waves"))
    body = server.of("POST")[0]["json"]
    assert body["duration"] == "5" and "num_frames" not in body and "seed" not in body


# -- slow jobs and timeouts ----------------------------------------------------------


def test_slow_job_is_polled_with_growing_waits(server):
    server.queue_polls, server.progress_polls = 3, 2
    clock = FakeClock()
    backend = fal_image(server, clock, poll_interval=1.0)
    backend.generate(ImageRequest(prompt="p"))
    assert len(server.of("GET", "/status")) == 6
    assert clock.sleeps == pytest.approx([1.0, 1.5, 2.25, 3.375, 5.0625])
    assert backend.last["polls"] == 6


def test_a_job_that_never_finishes_times_out_and_is_cancelled(server):
    server.never_complete = True
    clock = FakeClock()
    backend = fal_image(server, clock, timeout=20, poll_interval=1.0)
    with pytest.raises(HostedTimeoutError, match="did not finish within 20 s") as info:
        backend.generate(ImageRequest(prompt="p"))
    assert "timeout=SECONDS" in info.value.hint
    assert sum(clock.sleeps) <= 20
    assert server.of("PUT", "/cancel")


def test_a_server_that_does_not_answer_is_retried_then_reported(server):
    server.status_delay = 0.5
    clock = FakeClock()
    backend = fal_image(server, clock, request_timeout=0.1, max_retries=1)
    with pytest.raises(HostedTimeoutError, match="did not answer within 0.1 s") as info:
        backend.generate(ImageRequest(prompt="p"))
    # one call, one wait, one retry: counted on the client (the fake's own log may not have
    # seen the retry yet when it gives up after 0.1 s, which happened on a busy machine)
    assert "after 1 retries" in info.value.message and clock.sleeps == [0.5]
    assert 1 <= len(server.of("GET", "/status")) <= 2


# -- retries and errors --------------------------------------------------------------


def test_429_is_retried_honouring_retry_after(server):
    server.submit_replies = [(429, {"detail": "slow down"}, {"Retry-After": "7"})]
    clock = FakeClock()
    backend = fal_image(server, clock)
    backend.generate(ImageRequest(prompt="p"))
    assert len(server.of("POST")) == 2
    assert clock.sleeps[0] == 7


def test_retry_after_is_bounded(server):
    server.submit_replies = [(503, {"detail": "busy"}, {"Retry-After": "3600"})]
    clock = FakeClock()
    fal_image(server, clock, max_retry_wait=5).generate(ImageRequest(prompt="p"))
    assert clock.sleeps[0] == 5


def test_an_error_the_provider_marks_unretryable_is_not_retried(server):
    server.submit_replies = [(503, {"detail": "runner crashed"}, {"X-Fal-Retryable": "false"})]
    with pytest.raises(HostedError, match="HTTP 503"):
        fal_image(server, FakeClock()).generate(ImageRequest(prompt="p"))
    assert len(server.of("POST")) == 1


def test_5xx_gives_up_after_the_retries(server):
    server.submit_replies = [(503, {"detail": "busy"}, {})] * 3
    with pytest.raises(HostedError, match="HTTP 503"):
        fal_image(server, FakeClock(), max_retries=2).generate(ImageRequest(prompt="p"))
    assert len(server.of("POST")) == 3


def test_a_rejected_key_fails_at_once_and_names_the_setting(server):
    server.submit_replies = [(401, {"detail": "Invalid key"}, {})]
    with pytest.raises(HostedAuthError, match="rejected the API key") as info:
        fal_image(server, FakeClock()).generate(ImageRequest(prompt="p"))
    assert "FAL_KEY" in info.value.hint and "POPCORN_FAL_KEY" in info.value.hint
    assert len(server.of("POST")) == 1


@pytest.mark.parametrize(
    "status,body",
    [
        (402, {"detail": "Payment Required"}),
        (403, {"detail": "User is locked. Reason: Exhausted balance. Top up your balance."}),
    ],
)
def test_an_empty_balance_is_reported_as_such(server, status, body):
    server.submit_replies = [(status, body, {})]
    with pytest.raises(HostedAuthError, match="out of credit") as info:
        fal_image(server, FakeClock()).generate(ImageRequest(prompt="p"))
    assert "FAL_KEY" in info.value.hint
    assert len(server.of("POST")) == 1  # never retried


def test_a_content_policy_refusal_is_reported_as_a_refusal(server):
    detail = [
        {
            "loc": ["body", "prompt"],
            "msg": "The content was flagged by a content checker.",
            "type": "content_policy_violation",
            "categories": ["violence"],
        }
    ]
    server.result_reply = (422, {"detail": detail}, {})
    backend = fal_image(server, FakeClock())
    with pytest.raises(ContentRefusedError, match="content policy") as info:
        backend.generate(ImageRequest(prompt="p"))
    assert "violence" in str(info.value) and "req-1" in str(info.value)
    assert backend.last["refused"] is True
    assert len(server.of("GET", "/requests/req-1")) == 2  # status + result, no retry


def test_an_image_flagged_by_the_safety_checker_is_a_refusal(server):
    server.nsfw = True
    with pytest.raises(ContentRefusedError, match="safety checker"):
        fal_image(server, FakeClock()).generate(ImageRequest(prompt="p"))


def test_a_truncated_download_is_retried(server):
    server.truncate_downloads = 1
    clock = FakeClock()
    clip = fal_video(FalLTX, server, clock).generate(VideoRequest(prompt="p"))
    assert len(clip.frames) == 48
    assert len(server.of("GET", "/files/clip.mp4")) == 2


def test_a_download_that_stays_truncated_fails_cleanly(server):
    server.truncate_downloads = 10
    with pytest.raises(HostedError, match="cut short"):
        fal_video(FalLTX, server, FakeClock(), max_retries=1).generate(VideoRequest(prompt="p"))


def test_a_result_that_is_not_a_video_fails_cleanly(server):
    server.files["clip.mp4"] = b"not a video at all"
    with pytest.raises(HostedError, match="could not be decoded"):
        fal_video(FalLTX, server, FakeClock()).generate(VideoRequest(prompt="p"))


# -- options, keys, availability, costs ------------------------------------------------


def test_options_are_validated():
    with pytest.raises(ConfigError, match="resolution") as info:
        FalLTX.resolve(Settings(video="fal-ltx", video_options={"resolution": "4k"}))
    assert "known options" in info.value.hint
    with pytest.raises(ConfigError, match="nope"):
        FalFlux.resolve(Settings(image="fal-flux", image_options={"nope": "1"}))


def test_availability_needs_a_key_and_makes_no_call(monkeypatch):
    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.delenv("POPCORN_FAL_KEY", raising=False)
    avail = FalWan.availability(Settings())
    assert not avail.ok and "FAL_KEY" in avail.reason
    monkeypatch.setenv("FAL_KEY", KEY)
    avail = FalWan.availability(Settings())
    assert avail.ok and KEY not in avail.reason
    monkeypatch.setenv("POPCORN_FAL_KEY", "popcorn-key")
    assert FalWan.read_key() == "popcorn-key"  # the POPCORN_* variable wins


def test_backends_command_lists_hosted_backends(monkeypatch):
    from click.testing import CliRunner

    from llmpopcorn.cli import main

    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.delenv("POPCORN_FAL_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    result = CliRunner().invoke(main, ["backends", "--json"])
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    rows = {r["name"]: r for r in table["image"] + table["video"]}
    assert rows["openai-image"]["usable"] is True
    for name in ("fal-flux", "fal-sd", "fal-ltx", "fal-wan", "fal-hunyuan", "fal-kling"):
        assert rows[name]["usable"] is False and "FAL_KEY" in rows[name]["reason"]
    assert "sk-test" not in result.output


def test_max_cost_refuses_before_any_call(server, monkeypatch):
    from llmpopcorn.core.registry import registry

    monkeypatch.setenv("FAL_KEY", KEY)
    settings = Settings(video="fal-kling", video_options={"base_url": server.url}, max_cost=0.10)
    with pytest.raises(CostLimitError, match=r"above --max-cost \$0.1"):
        registry.create("video", "fal-kling", settings)
    assert server.requests == []
    # the cover and the clip together: each fits, the sum does not
    settings = Settings(
        image="fal-flux", video="fal-wan", max_cost=0.246, video_options={"resolution": "720p"}
    )
    costs = estimate_run_cost(settings)
    assert costs["image"] < 0.246 and costs["video"] < 0.246
    with pytest.raises(CostLimitError, match="this run would cost"):
        registry.create("image", "fal-flux", settings)
    cheaper = settings.model_copy(update={"video_options": {"resolution": "480p"}})
    registry.create("image", "fal-flux", cheaper)  # 480p fits


def test_max_cost_refuses_a_model_with_no_known_price(monkeypatch):
    from llmpopcorn.core.registry import registry

    monkeypatch.setenv("FAL_KEY", KEY)
    settings = Settings(video="fal-ltx", video_options={"model": "someone/new-model"}, max_cost=1)
    with pytest.raises(CostLimitError, match="no price is known") as info:
        registry.create("video", "fal-ltx", settings)
    assert "price=USD" in info.value.hint
    priced = settings.model_copy(
        update={"video_options": {"model": "someone/new-model", "price": "0.5"}}
    )
    assert registry.create("video", "fal-ltx", priced).estimate() == 0.5


def test_batch_hook_refuses_an_expensive_batch():
    settings = Settings(image="fal-flux", video="fal-kling")
    total = check_batch_cost(settings, runs=10)
    assert total == pytest.approx(10 * (0.003 * 0.9216 + 0.35))
    with pytest.raises(CostLimitError, match="10 runs would cost"):
        check_batch_cost(settings, runs=10, limit=1.0)


def test_a_missing_key_fails_at_creation_naming_the_variables(monkeypatch):
    from llmpopcorn.core.registry import registry

    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.delenv("POPCORN_FAL_KEY", raising=False)
    with pytest.raises(HostedAuthError, match="no API key") as info:
        registry.create("image", "fal-sd", Settings(image="fal-sd"))
    assert "POPCORN_FAL_KEY or FAL_KEY" in info.value.hint


# -- the whole pipeline ---------------------------------------------------------------


def _hosted_settings(server, tmp_path, **extra):
    opts = {"base_url": server.url, "poll_interval": "0.01"}
    return Settings(
        image="fal-flux",
        video="fal-wan",
        image_options=opts,
        video_options=opts,
        out_dir=tmp_path,
        score=False,
        **extra,
    )


def test_make_with_hosted_cover_and_clip(server, tmp_path, monkeypatch, caplog):
    from llmpopcorn.backends.media import probe_mp4
    from llmpopcorn.pipeline.core import Pipeline

    monkeypatch.setenv("FAL_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    record = Pipeline(_hosted_settings(server, tmp_path, video_from_cover=True)).make(
        "a corgi learns to surf"
    )
    assert record.status == "ok"
    run_dir = tmp_path / record.run_dir.split("/")[-1]
    info = probe_mp4(run_dir / "clip.mp4")
    assert info["codec"] == "h264" and info["seconds"] == pytest.approx(3.0)
    clip = record.artifact("clip")
    assert clip.backend == "fal-wan" and clip.meta["request_id"] == "req-2"
    assert clip.meta["seconds"] == pytest.approx(3.0) and clip.meta["job_seconds"] >= 0
    assert clip.meta["model"] == "fal-ai/wan/v2.2-a14b/image-to-video"
    assert record.backends["image"].options["last_call"]["request_id"] == "req-1"
    # the cover went to the clip model
    assert server.of("POST")[1]["json"]["image_url"].startswith("data:image/png")
    text = (run_dir / "record.json").read_text()
    assert KEY not in text and KEY not in caplog.text


def test_a_refusal_fails_the_run_cleanly_and_is_recorded(server, tmp_path, monkeypatch):
    from llmpopcorn.pipeline.core import Pipeline
    from llmpopcorn.pipeline.report import load_record

    monkeypatch.setenv("FAL_KEY", KEY)
    detail = [{"msg": "flagged", "type": "content_policy_violation", "categories": ["hate"]}]
    server.result_reply = (422, {"detail": detail}, {})
    pipeline = Pipeline(_hosted_settings(server, tmp_path))
    with pytest.raises(ContentRefusedError):
        pipeline.make("a corgi learns to surf")
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    record = load_record(run_dir)
    assert record.status == "failed"
    assert "refused" in record.error and "content policy" in record.error
    assert record.idea is not None  # what was done before is kept
    assert "hate" in record.error  # the provider's categories are kept


def test_cli_make_reports_a_quota_error_as_error_and_hint(server, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from llmpopcorn.cli import main

    monkeypatch.setenv("FAL_KEY", KEY)
    server.submit_replies = [(403, {"detail": "User is locked. Reason: Exhausted balance."}, {})]
    args = ["make", "a corgi", "--image", "fal-flux", "--out", str(tmp_path), "--no-score"]
    args += ["--image-opt", f"base_url={server.url}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "out of credit" in result.output
    assert "hint:" in result.output and "FAL_KEY" in result.output
    assert KEY not in result.output


# -- OpenAI Images ----------------------------------------------------------------------


def openai_image(server, clock, **opts):
    from llmpopcorn.backends.hosted.openai_image import OpenAIImage, OpenAIImageOptions

    options = OpenAIImageOptions(base_url=f"{server.url}/v1", **opts)
    return OpenAIImage(options, api_key="sk-secret-999", sleep=clock.sleep)


def test_openai_image_success(server):
    backend = openai_image(server, FakeClock())
    cover = backend.generate(ImageRequest(prompt="a corgi surfing"))
    assert (cover.width, cover.height) == (864, 1536)  # 1024x1536 centre-cropped to 9:16
    (call,) = server.of("POST", "/v1/images/generations")
    headers = {k.lower(): v for k, v in call["headers"].items()}
    assert headers["authorization"] == "Bearer sk-secret-999"
    body = call["json"]
    assert body["model"] == "gpt-image-1" and body["size"] == "1024x1536"
    assert body["quality"] == "medium" and "response_format" not in body
    use = backend.describe()
    assert use.options["last_call"]["request_id"] == "req_openai_1"
    assert use.options["last_call"]["cost_estimate_usd"] == pytest.approx(0.063)
    assert "sk-secret-999" not in json.dumps(use.model_dump())


def test_openai_dalle_asks_for_base64_and_checks_sizes(server):
    backend = openai_image(server, FakeClock(), model="dall-e-3", quality="hd")
    backend.generate(ImageRequest(prompt="p"))
    body = server.of("POST")[0]["json"]
    assert body["response_format"] == "b64_json" and body["size"] == "1024x1792"
    assert backend.estimate() == pytest.approx(0.12)
    with pytest.raises(ConfigError, match="does not make 1024x1536"):
        openai_image(server, FakeClock(), model="dall-e-3", size="1024x1536")
    with pytest.raises(ConfigError, match="no quality"):
        openai_image(server, FakeClock(), quality="ultra")


def test_openai_refusal(server):
    error = {"error": {"code": "moderation_blocked", "message": "Your request was rejected."}}
    server.openai_replies = [(400, error, {})]
    with pytest.raises(ContentRefusedError, match="Your request was rejected"):
        openai_image(server, FakeClock()).generate(ImageRequest(prompt="p"))
    assert len(server.of("POST")) == 1


def test_openai_insufficient_quota_is_not_retried(server):
    error = {"error": {"code": "insufficient_quota", "message": "You exceeded your quota."}}
    server.openai_replies = [(429, error, {})]
    with pytest.raises(HostedAuthError, match="out of credit") as info:
        openai_image(server, FakeClock()).generate(ImageRequest(prompt="p"))
    assert "OPENAI_API_KEY" in info.value.hint and "POPCORN_IMAGE_API_KEY" in info.value.hint
    assert len(server.of("POST")) == 1


def test_openai_rate_limit_is_retried_with_retry_after(server):
    error = {"error": {"code": "rate_limit_exceeded", "message": "Slow down."}}
    server.openai_replies = [(429, error, {"Retry-After": "2"}), (500, {"error": {}}, {})]
    clock = FakeClock()
    openai_image(server, clock).generate(ImageRequest(prompt="p"))
    assert len(server.of("POST")) == 3
    assert clock.sleeps == [2.0, 1.0]  # Retry-After, then the backoff


def test_openai_rejected_key(server):
    server.openai_replies = [(401, {"error": {"code": "invalid_api_key", "message": "bad"}}, {})]
    with pytest.raises(HostedAuthError, match="rejected the API key"):
        openai_image(server, FakeClock()).generate(ImageRequest(prompt="p"))


def test_openai_compatible_server_with_its_own_model(server):
    backend = openai_image(server, FakeClock(), model="my-flux", size="720x1280")
    assert backend.estimate() is None  # no known price: --max-cost would refuse it
    backend.generate(ImageRequest(prompt="p"))
    assert server.of("POST")[0]["json"]["size"] == "720x1280"


def test_make_with_an_openai_cover(server, tmp_path, monkeypatch):
    from llmpopcorn.pipeline.core import Pipeline

    monkeypatch.setenv("OPENAI_API_KEY", "sk-pipeline-secret")
    settings = Settings(
        image="openai-image",
        image_options={"base_url": f"{server.url}/v1", "quality": "low"},
        out_dir=tmp_path,
        score=False,
    )
    record = Pipeline(settings).make("a corgi learns to surf")
    cover = record.artifact("cover")
    assert (cover.meta["width"], cover.meta["height"]) == (864, 1536)
    use = record.backends["image"]
    assert use.model == "gpt-image-1" and use.options["quality"] == "low"
    assert use.options["last_call"]["cost_estimate_usd"] == pytest.approx(0.016)
    assert server.of("POST")[0]["json"]["prompt"] == record.idea.cover_prompt
    assert "sk-pipeline-secret" not in record.model_dump_json()


def test_the_batch_cap_counts_every_hosted_call_of_the_batch(server):
    from llmpopcorn.backends.hosted.base import batch_budget

    clock = FakeClock()
    with batch_budget() as ledger:
        image = fal_image(server, clock)
        image.max_batch_cost = 0.005  # two FLUX covers cost about $0.0055
        image.generate(ImageRequest(prompt="p"))
        assert ledger.calls == 1 and ledger.spent == pytest.approx(0.0027648)
        with pytest.raises(CostLimitError, match="past its cap"):
            image.generate(ImageRequest(prompt="p"))
    assert len(server.of("POST")) == 1  # refused before the second call
    with batch_budget():  # a new batch starts from zero
        image.generate(ImageRequest(prompt="p"))
