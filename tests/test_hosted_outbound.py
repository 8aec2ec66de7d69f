"""Issue 22, reproductions 1, 3, 4, 5 and 10: what hosted backends send where, and what
they accept back. The configured provider is a fake on 127.0.0.1; "another origin" is a
second fake on localhost (another host and port). Their request logs are the network log.
"""

from __future__ import annotations

import io
import itertools
import threading

import pytest

from fake_hosted_server import FakeClock, FakeHostedServer, png_bytes
from fake_origin import FakeOrigin, guard_connects
from llmpopcorn.backends.base import ImageRequest
from llmpopcorn.backends.hosted.fal import FalFlux, FalImageOptions
from llmpopcorn.core.errors import PopcornError

KEY = "fal-CANARY-key-7781"
OPENAI_KEY = "sk-CANARY-openai-7782"


@pytest.fixture
def connects(monkeypatch):
    return guard_connects(monkeypatch)


@pytest.fixture
def fal():
    with FakeHostedServer() as srv:
        yield srv


@pytest.fixture
def other():
    with FakeOrigin(host="localhost") as srv:
        yield srv


def flux(server, clock=None, **opts) -> FalFlux:
    clock = clock or FakeClock()
    options = FalImageOptions(base_url=server.url, max_retries=0, **opts)
    return FalFlux(options, api_key=KEY, sleep=clock.sleep, clock=clock)


def submit_naming(fal, status_url: str, response_url: str) -> None:
    reply = {"request_id": "req-x", "status_url": status_url, "response_url": response_url}
    fal.submit_replies = [(200, reply, {})]


# -- 1. keys to another origin -----------------------------------------------------------


def test_fal_status_and_result_urls_on_another_origin_get_no_key(fal, other):
    other.routes["/q/status"] = (200, {}, {"status": "COMPLETED"})
    other.routes["/q/result"] = (200, {}, {"images": [{"url": f"{other.url}/cover.png"}]})
    other.routes["/cover.png"] = (200, {}, png_bytes())
    submit_naming(fal, f"{other.url}/q/status", f"{other.url}/q/result")
    cover = flux(fal).generate(ImageRequest(prompt="a corgi"))
    assert cover.width * 16 == cover.height * 9
    assert [r["path"] for r in other.log] == ["/q/status", "/q/result", "/cover.png"]
    assert other.seen(KEY) == []  # the status, result and file calls went there keyless
    assert fal.requests[0]["headers"]["Authorization"] == f"Key {KEY}"  # home: with it


def test_a_307_from_the_provider_to_another_origin_drops_the_key(fal, other):
    other.routes["/moved/status"] = (200, {}, {"status": "COMPLETED"})
    other.routes["/moved/result"] = (200, {}, {"images": [{"url": f"{fal.url}/files/cover.png"}]})
    redirect = FakeOrigin()  # a third origin (another port) between the provider and `other`
    with redirect:
        redirect.routes["/s"] = (307, {"Location": f"{other.url}/moved/status"}, b"")
        redirect.routes["/r"] = (307, {"Location": f"{other.url}/moved/result"}, b"")
        submit_naming(fal, f"{redirect.url}/s", f"{redirect.url}/r")
        flux(fal).generate(ImageRequest(prompt="a corgi"))
    assert other.log and other.seen(KEY) == [] and redirect.seen(KEY) == []


def test_the_configured_origin_redirecting_away_sends_no_key_on(other):
    """fal's own status endpoint answers 307 to another origin: the hop goes keyless."""
    other.routes["/elsewhere"] = (200, {}, {"status": "COMPLETED"})
    with FakeOrigin() as home:  # a configured origin that redirects
        home.routes["/fal-ai/flux/schnell"] = (
            200,
            {},
            {
                "request_id": "r1",
                "status_url": f"{home.url}/st",
                "response_url": f"{home.url}/res",
            },
        )
        home.routes["/st"] = (307, {"Location": f"{other.url}/elsewhere"}, b"")
        home.routes["/res"] = (200, {}, {"images": [{"url": f"{home.url}/c.png"}]})
        home.routes["/c.png"] = (200, {}, png_bytes())
        flux(home).generate(ImageRequest(prompt="a corgi"))
        assert home.seen(KEY)  # submit, status, result: with the key at home
    assert [r["path"] for r in other.log] == ["/elsewhere"] and other.seen(KEY) == []


def test_openai_image_urls_and_redirects_elsewhere_get_no_key(other):
    from llmpopcorn.backends.hosted.openai_image import OpenAIImage, OpenAIImageOptions

    other.routes["/img.png"] = (200, {}, png_bytes(1024, 1536))
    with FakeOrigin() as home:
        home.routes["/v1/images/generations"] = (
            200,
            {},
            {"created": 0, "data": [{"url": f"{other.url}/img.png"}]},
        )
        backend = OpenAIImage(
            OpenAIImageOptions(base_url=f"{home.url}/v1", max_retries=0),
            api_key=OPENAI_KEY,
            sleep=FakeClock().sleep,
        )
        backend.generate(ImageRequest(prompt="p"))
        assert home.seen(f"Bearer {OPENAI_KEY}")
        home.routes["/v1/images/generations"] = (
            307,
            {"Location": f"{other.url}/v1/images/generations"},
            b"",
        )
        with pytest.raises(PopcornError):
            backend.generate(ImageRequest(prompt="p"))  # the other host answers 404
    assert other.log and other.seen(OPENAI_KEY) == []


# -- 3. fetches to internal addresses -------------------------------------------------------


@pytest.mark.parametrize("where", ["status", "image", "redirect"])
def test_internal_addresses_named_by_a_provider_are_never_connected(fal, connects, where):
    metadata = "http://169.254.169.254/latest/meta-data/iam"
    if where == "status":
        submit_naming(fal, metadata, f"{fal.url}/fal-ai/flux/requests/req-x")
    elif where == "image":
        fal.result = {"images": [{"url": metadata}]}
    else:
        with FakeOrigin() as hop:  # not the configured origin, redirects inside
            hop.routes["/cover.png"] = (302, {"Location": metadata}, b"")
            fal.result = {"images": [{"url": f"{hop.url}/cover.png"}]}
            with pytest.raises(PopcornError, match="169.254.169.254"):
                flux(fal).generate(ImageRequest(prompt="p"))
        assert "169.254.169.254" not in connects
        return
    with pytest.raises(PopcornError, match="169.254.169.254 is a link-local address"):
        flux(fal).generate(ImageRequest(prompt="p"))
    assert "169.254.169.254" not in connects


def test_private_addresses_are_refused_with_a_loopback_base(fal, connects):
    fal.result = {"images": [{"url": "http://10.1.2.3/cover.png"}]}
    with pytest.raises(PopcornError, match="private address"):
        flux(fal).generate(ImageRequest(prompt="p"))
    assert "10.1.2.3" not in connects


# -- 4. no size cap --------------------------------------------------------------------------


def test_a_400_mb_image_is_not_buffered(fal, other):
    """The default cap (200 MiB) stops the stream long before 400 MiB are read."""
    chunk = b"\0" * (1 << 20)
    other.routes["/huge.png"] = (200, {}, lambda: itertools.repeat(chunk, 400))
    fal.result = {"images": [{"url": f"{other.url}/huge.png"}]}
    with pytest.raises(PopcornError, match="too large") as info:
        flux(fal).generate(ImageRequest(prompt="p"))
    assert info.value.hint
    assert other.chunks_sent < 400


def test_the_cap_is_an_option_and_a_declared_length_is_refused_unread(fal, other):
    other.routes["/big.png"] = (200, {"Content-Length": str(50 << 20)}, b"")
    fal.result = {"images": [{"url": f"{other.url}/big.png"}]}
    with pytest.raises(PopcornError, match="52,428,800 bytes"):
        flux(fal, max_download_mb=8).generate(ImageRequest(prompt="p"))


# -- 5. slow drip ------------------------------------------------------------------------------


def test_a_dripping_download_ends_at_the_deadline_not_per_read(fal, other):
    """1 byte per chunk, each chunk two (fake) seconds after the last: with
    request_timeout=5 and timeout=10 the run ends at the job's deadline."""
    clock = FakeClock()
    lock = threading.Lock()

    def drip():
        for _ in range(200):
            with lock:
                clock.now += 2.0
            yield b"x"

    other.routes["/drip.png"] = (200, {}, drip)
    fal.result = {"images": [{"url": f"{other.url}/drip.png"}]}
    with pytest.raises(PopcornError, match="did not finish within 10 s") as info:
        flux(fal, clock, request_timeout=5, timeout=10).generate(ImageRequest(prompt="p"))
    assert "timeout" in info.value.hint


# -- 10. decompression bombs ---------------------------------------------------------------------


def test_a_20000x20000_png_is_too_large_not_a_bug(fal):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")
    fal.files["cover.png"] = buffer.getvalue()
    with pytest.raises(PopcornError, match="the provider's image is too large") as info:
        flux(fal).generate(ImageRequest(prompt="p"))
    assert "20000x20000" in info.value.message or "too large" in info.value.message
    assert info.value.hint
