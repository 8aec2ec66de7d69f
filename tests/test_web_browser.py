"""The web UI in a real headless browser (Debian's chromium, driven by Playwright).

CI installs chromium (.ci/run); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs /usr/bin/chromium (apt-get install chromium)"
)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture
def server(out_dir):
    import uvicorn

    from fakes import draft_pipeline
    from llmpopcorn.settings import Settings
    from llmpopcorn.web.app import create_app

    def factory(settings):
        return draft_pipeline(settings, size=(180, 320), fps=8)

    app = create_app(
        Settings.resolve(env={}, out_dir=out_dir, score=False), pipeline_factory=factory
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the web server did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_make_from_the_page_shows_title_cover_and_clip(server, tmp_path):
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(server)
        page.fill("#query", "a corgi learns to surf")
        page.click("#go")
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        assert "corgi" in page.inner_text("#title").lower()
        page.wait_for_function("document.getElementById('cover').naturalWidth > 0", timeout=20_000)
        assert page.eval_on_selector("#cover", "img => img.naturalWidth") == 180
        assert "No LLM was used" in page.inner_text("#notes")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        # an empty query is refused by the server with the hint shown on the page
        page.fill("#query", "   ")
        page.click("#go")
        page.wait_for_function("document.getElementById('error').textContent.length > 0")
        assert "empty" in page.inner_text("#error")
        browser.close()
