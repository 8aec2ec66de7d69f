"""The outbound-HTTP policy (backends/outbound.py) against real local servers.

Two servers on this machine stand for the configured provider (127.0.0.1:A) and another
origin (localhost:B): their request logs are the network log that shows where a key went.
Addresses other than loopback come from an injected resolver; nothing leaves the machine.
"""

from __future__ import annotations

import io
import itertools
import time

import httpx
import pytest

from fake_origin import FakeOrigin, guard_connects
from llmpopcorn.backends.outbound import (
    OutboundError,
    OutboundPolicy,
    OutboundRefused,
    OutboundTimeout,
    OutboundTooLarge,
    address_kind,
    open_image,
)

KEY = "sk-CANARY-outbound-0001"


@pytest.fixture
def provider():
    with FakeOrigin() as srv:
        yield srv


@pytest.fixture
def other():
    with FakeOrigin(host="localhost") as srv:  # another origin (host and port differ)
        yield srv


@pytest.fixture
def connects(monkeypatch):
    return guard_connects(monkeypatch)


def policy_for(server, **kw) -> OutboundPolicy:
    return OutboundPolicy(server.url, headers={"Authorization": f"Key {KEY}"}, who="fal", **kw)


def test_the_key_goes_to_the_configured_origin_only(provider, other):
    provider.routes["/api"] = (200, {}, {"ok": 1})
    other.routes["/file"] = (200, {}, b"data")
    policy = policy_for(provider)
    assert policy.request("GET", f"{provider.url}/api").json() == {"ok": 1}
    assert policy.download(f"{other.url}/file", auth=True) == b"data"
    assert policy.request("GET", f"{other.url}/file").status_code == 200
    assert len(provider.seen(KEY)) == 1
    assert other.log and other.seen(KEY) == []  # fetched, without the key


def test_a_redirect_to_another_origin_drops_the_key(provider, other):
    provider.routes["/status"] = (307, {"Location": f"{other.url}/status"}, b"")
    other.routes["/status"] = (200, {}, {"status": "COMPLETED"})
    policy = policy_for(provider)
    assert policy.request("GET", f"{provider.url}/status").json()["status"] == "COMPLETED"
    assert provider.seen(KEY) and other.log and other.seen(KEY) == []


def test_an_sdk_client_following_redirects_drops_any_authorization(provider, other):
    provider.routes["/v1/x"] = (308, {"Location": f"{other.url}/v1/x"}, b"")
    other.routes["/v1/x"] = (200, {}, {"ok": True})
    client = policy_for(provider).sdk_client()
    reply = client.post(
        f"{provider.url}/v1/x", headers={"Authorization": f"Bearer {KEY}", "X-Api-Key": KEY}
    )
    assert reply.json() == {"ok": True}
    assert other.log and other.seen(KEY) == []


def test_a_url_for_another_origin_carrying_the_key_is_refused(provider, other):
    policy = OutboundPolicy(provider.url, params={"key": KEY}, who="pixabay")
    provider.routes["/api"] = (200, {}, {"ok": 1})
    policy.request("GET", f"{provider.url}/api")
    assert f"key={KEY}" in provider.log[0]["path"]  # the key as a query parameter, at home
    policy.request("GET", f"{provider.url}/api?q=corgi+surf&page=2", params={"per_page": 5})
    sent = provider.log[-1]["path"]  # the URL's own query is kept beside params and key
    assert "q=corgi+surf" in sent and "page=2" in sent and "per_page=5" in sent
    assert f"key={KEY}" in sent
    with pytest.raises(OutboundRefused, match="refused to send the pixabay key"):
        policy.download(f"{other.url}/v.mp4?key={KEY}")
    assert other.log == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/",
        "http://10.0.0.5/x",
        "http://0.0.0.0:80/",
        "http://metadata.test/computeMetadata/v1/",
    ],
)
def test_internal_addresses_are_refused_before_connecting(provider, connects, url):
    resolver = {"127.0.0.1": ["127.0.0.1"], "metadata.test": ["169.254.169.254"]}
    policy = policy_for(provider, resolver=lambda host, port: resolver[host])
    with pytest.raises(OutboundRefused, match="refused to connect"):
        policy.download(url)
    assert connects == []


def test_a_name_resolving_to_an_internal_address_is_refused_at_connect(provider, connects):
    """The real transport resolves once and connects to what it checked (no rebinding)."""
    answers = iter([["93.184.216.34"], ["169.254.169.254"]])
    policy = OutboundPolicy("https://api.example.org", resolver=lambda h, p: next(answers))
    assert policy.allowed_kinds() == {"global"}  # the first answer: the base is public
    with pytest.raises(OutboundRefused, match="169.254.169.254, a link-local address"):
        policy.download("https://api.example.org/file")
    assert connects == []


def test_a_public_base_may_not_reach_loopback(connects):
    policy = OutboundPolicy(
        "https://queue.example.net", resolver=lambda host, port: ["93.184.216.34"]
    )
    with pytest.raises(OutboundRefused, match="loopback"):
        policy.download("http://127.0.0.1:9/file")
    assert connects == []


def test_only_http_urls_are_fetched(provider):
    policy = policy_for(provider)
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1/"):
        with pytest.raises(OutboundRefused, match="only http"):
            policy.download(url)
    with pytest.raises(OutboundRefused):
        OutboundPolicy("file:///etc")


def test_address_kinds():
    assert address_kind("8.8.8.8") == "global"
    assert address_kind("127.0.0.2") == "loopback"
    assert address_kind("169.254.169.254") == "link-local"
    assert address_kind("fe80::1") == "link-local"
    assert address_kind("192.168.1.4") == "private"
    assert address_kind("::ffff:10.0.0.1") == "private"
    assert address_kind("224.0.0.1") == "other"
    assert address_kind("100.64.0.1") == "other"  # shared address space: not public


def test_a_declared_length_over_the_cap_is_refused_before_the_body(provider):
    provider.routes["/big"] = (200, {"Content-Length": str(10**9)}, b"")
    with pytest.raises(OutboundTooLarge, match="1,000,000,000 bytes"):
        policy_for(provider, max_bytes=1 << 20).download(f"{provider.url}/big")


def test_a_streamed_body_is_stopped_at_the_cap(provider):
    chunk = b"x" * 65536
    provider.routes["/stream"] = (200, {}, lambda: itertools.repeat(chunk, 4096))  # 256 MiB
    with pytest.raises(OutboundTooLarge, match="more than 1,048,576 bytes"):
        policy_for(provider, max_bytes=1 << 20).download(f"{provider.url}/stream")
    assert provider.chunks_sent < 4096  # the server was cut off long before the end


class StepClock:
    """Time that advances a fixed step each time it is read."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_the_deadline_is_on_the_whole_body_not_one_read():
    """1 byte per chunk, each chunk '2 s' later: stopped at the deadline (10 s), not after
    the 10,000 chunks a per-read timeout would allow."""
    sent = {"n": 0}

    def drip():
        for _ in range(10_000):
            sent["n"] += 1
            yield b"x"

    def handler(request):
        return httpx.Response(200, stream=_Iter(drip()))

    clock = StepClock(2.0)
    policy = OutboundPolicy(
        "http://127.0.0.1:1", clock=clock, transport=httpx.MockTransport(handler)
    )
    with pytest.raises(OutboundTimeout, match="total deadline"):
        policy.download("http://127.0.0.1:1/drip", deadline=clock.now + 10)
    assert sent["n"] <= 6


class _Iter(httpx.SyncByteStream):
    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        yield from self.chunks


def test_a_dripping_server_is_cut_off_through_the_real_transport(provider):
    """A real socket: 1 byte every 50 ms forever, a per-read timeout of 5 s that never
    fires, and a deadline 10 (clock) seconds away while each read costs a (clock) second:
    cut off after about 10 bytes. The clock is the policy's, not the wall's, so a busy
    machine cannot change the outcome."""

    def drip():
        while True:
            time.sleep(0.05)
            yield b"x"

    provider.routes["/drip"] = (200, {}, drip)
    clock = StepClock(1.0)
    policy = policy_for(provider, request_timeout=5.0, clock=clock)
    with pytest.raises(OutboundTimeout):
        policy.download(f"{provider.url}/drip", deadline=clock.now + 10)
    assert provider.chunks_sent < 1000  # stopped: the server was not read forever


def test_an_error_status_on_download(provider):
    with pytest.raises(OutboundError, match="HTTP 404"):
        policy_for(provider).download(f"{provider.url}/missing")


def test_redirect_loops_stop(provider):
    provider.routes["/loop"] = (302, {"Location": "/loop"}, b"")
    with pytest.raises(OutboundError, match="redirected more than"):
        policy_for(provider).download(f"{provider.url}/loop")


def test_a_decompression_bomb_is_a_clean_too_large_error():
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")  # 400 M pixels, ~50 KB
    with pytest.raises(OutboundTooLarge, match="the provider's image is too large"):
        open_image(buffer.getvalue(), "the cover")
    small = io.BytesIO()
    Image.new("RGB", (4, 8), (1, 2, 3)).save(small, format="PNG")
    assert open_image(small.getvalue(), "the cover").size == (4, 8)
    with pytest.raises(OutboundError, match="not a readable image"):
        open_image(b"<html>", "the cover")
