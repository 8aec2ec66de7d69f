"""The studio in a real headless browser (Debian's chromium, driven by Playwright): submit a
job, watch its stages advance, find it in the history after a reload, compare two runs and
download the package.

CI installs chromium (.ci/run); elsewhere the test is skipped with the reason. Set
WEB_SCREENSHOTS=DIR to keep a screenshot of each view.
"""

from __future__ import annotations

import io
import json
import os
import threading
import zipfile
from pathlib import Path

import pytest

from browser_fixtures import CHROMIUM, FLAGS, serving

pytest.importorskip("fastapi")
playwright_sync = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs /usr/bin/chromium (apt-get install chromium)"
)

#: the run waits at its ideate stage until the page has shown a stage as active (a fixed
#: delay per stage made that likely only: on a busy machine the run could end first)
HOLD = threading.Event()


@pytest.fixture
def server(out_dir):
    from fakes import draft_pipeline
    from llmpopcorn.core.settings import Settings
    from llmpopcorn.pipeline.core import Pipeline
    from llmpopcorn.web.app import create_app

    class Paced(Pipeline):
        def make(self, query, *, on_stage=None, **kwargs):
            def paced(stage):
                on_stage(stage)
                if stage == "ideate":
                    HOLD.wait(120)

            return super().make(query, on_stage=paced, **kwargs)

    def factory(settings):
        pipeline = draft_pipeline(settings, size=(180, 320), fps=8)
        pipeline.__class__ = Paced
        return pipeline

    app = create_app(
        Settings.resolve(env={}, out_dir=out_dir, score=False), pipeline_factory=factory
    )
    with serving(app) as url:
        HOLD.clear()
        yield url
        HOLD.set()  # never leave the run waiting


def test_submit_watch_history_compare_and_download(server, tmp_path):
    shots = Path(os.environ.get("WEB_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
        page.set_default_timeout(120_000)  # waits are "until it happens" guards, not speeds
        page.goto(server)
        page.wait_for_selector("#llm option[value=offline]", state="attached")
        page.fill("#query", "a corgi learns to surf")
        page.click("#go")
        # the stage list advances: a stage is shown as active while the run is going, and the
        # page saw every stage's event in order
        page.wait_for_selector("#stages li.active", timeout=120_000)
        page.screenshot(path=str(shots / "1-progress.png"), full_page=True)
        HOLD.set()  # seen: the run may go on
        page.wait_for_selector("#result:not([hidden])", timeout=120_000)
        assert "corgi" in page.inner_text("#title").lower()
        log = page.get_attribute("#stages", "data-log")
        assert log == "start prompt ideate cover clip score", log
        page.wait_for_function("document.getElementById('cover').naturalWidth > 0")
        assert page.eval_on_selector("#cover", "img => img.naturalWidth") == 180
        assert "No LLM was used" in page.inner_text("#notes")
        assert page.inner_text("#cover-prompt") and page.inner_text("#video-prompt")
        page.screenshot(path=str(shots / "2-result.png"), full_page=True)

        # "another take": the same request with a new seed, as a second run
        page.click("#another")
        page.wait_for_function("document.querySelectorAll('#history-list tr').length === 2")
        page.wait_for_selector("#history-list td.state-done >> nth=1", timeout=120_000)

        # history survives a reload
        page.reload()
        page.wait_for_selector("#history-list tr >> nth=1")
        page.wait_for_selector("#result:not([hidden])")  # the run in the URL is shown again
        page.wait_for_function("document.getElementById('cover').naturalWidth > 0")
        rows = page.inner_text("#history-list")
        assert len(rows.splitlines()) == 2 and rows.count("\tdone\t") == 2
        page.fill("#search", "nothing like this")
        page.press("#search", "Enter")
        page.wait_for_selector("#page-info:text('no runs yet')")
        page.fill("#search", "corgi")
        page.press("#search", "Enter")
        page.wait_for_function("document.querySelectorAll('#history-list tr').length === 2")
        page.screenshot(path=str(shots / "3-history.png"), full_page=True)

        # compare the two runs side by side
        boxes = page.locator("#history-list input.pick")
        for number in (0, 1):  # keyboard-usable: focus and Space
            boxes.nth(number).focus()
            page.keyboard.press("Space")
        assert boxes.nth(0).is_checked() and boxes.nth(1).is_checked()
        page.click("#compare")
        page.wait_for_selector("#compare-view:not([hidden])")
        assert len(page.query_selector_all("#compare-cols .card")) == 2
        page.screenshot(path=str(shots / "4-compare.png"), full_page=True)

        # open a run from the history and download its package
        page.click("#history-list a >> nth=0")
        page.wait_for_selector("#download:not([hidden])")
        with page.expect_download() as info:
            page.click("#download")
        data = Path(info.value.path()).read_bytes()
        archive = zipfile.ZipFile(io.BytesIO(data))
        assert set(archive.namelist()) == {"clip.mp4", "cover.png", "metadata.json", "record.json"}
        assert json.loads(archive.read("metadata.json"))["title"]

        # a refused request shows the server's message on the page
        page.fill("#query", "   ")
        page.click("#go")
        page.wait_for_function("document.getElementById('error').textContent.length > 0")
        assert "empty" in page.inner_text("#error")
        browser.close()
