"""The studio in a real headless browser (Debian's chromium, driven by Playwright), for what a
creator sees beyond the happy path: a failed run shows the stage that failed, the error and
the hint, and no result card; the chips show what ran; the seed shown is the chosen
variant's; compare plays both clips; a history click brings the run into view; the page
fits a 390 px phone; the favicon is served.

CI installs chromium (.ci/run); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import urllib.request

import pytest

from browser_fixtures import CHROMIUM, FLAGS, serving

pytest.importorskip("fastapi")
playwright_sync = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs /usr/bin/chromium (apt-get install chromium)"
)

#: muted clips play on their own in compare
AUTOPLAY = ["--autoplay-policy=no-user-gesture-required"]
WAIT_MS = 60_000  # generous: the machine may be busy; nothing here is a speed check


@pytest.fixture
def server(out_dir):
    from fakes import TitleLengthScorer, draft_pipeline
    from llmpopcorn.core.settings import Settings
    from llmpopcorn.web.app import create_app

    def factory(settings):
        return draft_pipeline(settings, size=(180, 320), fps=8, scorer=TitleLengthScorer())

    app = create_app(Settings.resolve(env={}, out_dir=out_dir), pipeline_factory=factory)
    with serving(app) as url:
        yield url


def _submit(page, body: dict) -> str:
    """Queue a run through the page's own API (as its form does) and open it."""
    job = page.evaluate(
        """async (body) => {
            const r = await fetch('/api/runs', {method: 'POST', body: JSON.stringify(body),
                                                headers: {'Content-Type': 'application/json'}});
            return (await r.json()).id;
        }""",
        body,
    )
    page.evaluate("(id) => { location.hash = 'run=' + id; }", job)
    return job


def _no_horizontal_overflow(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_failure_view_chips_seed_compare_history_and_phone_layout(server):
    icon = urllib.request.urlopen(f"{server}/favicon.ico")  # noqa: S310 - a local test server
    assert icon.status == 200 and icon.headers["Content-Type"] == "image/svg+xml"
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS + AUTOPLAY)
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(server)
        page.wait_for_selector("#llm option[value=offline]", state="attached")
        assert page.locator("#llm option[value=fake]").count() == 0  # test-only: not offered

        # 1. a run that fails: DeepSeek with no key fails when the LLM is set up
        _submit(page, {"query": "a corgi learns to surf", "llm": "deepseek"})
        page.wait_for_selector("#failure:not([hidden])", timeout=WAIT_MS)
        assert page.inner_text("#failed-stage") == "ideate"
        assert "API key" in page.inner_text("#failure-error")
        assert "DEEPSEEK_API_KEY" in page.inner_text("#failure-hint")
        assert page.is_hidden("#result")  # no empty result card
        chips = {
            li.inner_text(): li.get_attribute("class")
            for li in page.query_selector_all("#stages li")
        }
        assert chips["prompt"] == "done" and chips["ideate"] == "failed"
        assert chips["cover"] == chips["clip"] == chips["score"] == "skipped"
        assert chips["failed"] == "failed" and "refine" not in chips
        assert page.is_visible("#retry")
        assert _no_horizontal_overflow(page)

        # 2. three variants: the seed shown is the chosen one's
        page.fill("#query", "a street food vendor flips a giant omelette")
        page.fill("#variants", "3")
        page.fill("#seed", "40")
        page.click("#go")
        page.wait_for_selector("#result:not([hidden])", timeout=WAIT_MS)
        record = page.evaluate("async () => (await (await fetch('/api/runs/' + "
                               "location.hash.split('=')[1])).json()).record")  # fmt: skip
        chosen = record["variants"][0]["seed"]
        assert f"seed {chosen} (best of 3 variants)" in page.inner_text("#meta")
        assert (
            record["idea"]["caption"] and page.inner_text("#caption") == record["idea"]["caption"]
        )
        assert page.inner_text("#hashtags").startswith("#")
        assert page.is_hidden("#failure")
        chips = {
            li.inner_text(): li.get_attribute("class")
            for li in page.query_selector_all("#stages li")
        }
        assert all(
            chips[s] == "done" for s in ("prompt", "ideate", "cover", "clip", "score", "done")
        )
        assert _no_horizontal_overflow(page)

        # 3. compare the two runs: the finished one plays its clip
        page.wait_for_function("document.querySelectorAll('#history-list tr').length === 2")
        page.wait_for_selector("#history-list td.state-done", timeout=WAIT_MS)
        boxes = page.locator("#history-list input.pick")
        boxes.nth(0).check()
        boxes.nth(1).check()
        page.click("#compare")
        page.wait_for_selector("#compare-view:not([hidden])")
        videos = page.locator("#compare-cols video")
        assert videos.count() == 1  # the failed run has no clip to play
        page.wait_for_function(
            "document.querySelector('#compare-cols video').readyState >= 2", timeout=WAIT_MS
        )
        assert _no_horizontal_overflow(page)

        # 4. a history click brings the run into view, at the top of the phone screen
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.click("#history-list a >> nth=1")  # the older run: the failed one
        page.wait_for_selector("#failure:not([hidden])", timeout=WAIT_MS)
        page.wait_for_function(
            "Math.abs(document.getElementById('progress').getBoundingClientRect().top) < 40"
        )
        assert _no_horizontal_overflow(page)
        browser.close()
