import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from fakes import draft_pipeline  # noqa: E402
from llmpopcorn.settings import Settings  # noqa: E402
from llmpopcorn.web.app import create_app  # noqa: E402


@pytest.fixture
def client(out_dir):
    settings = Settings.resolve(env={}, out_dir=out_dir, score=False)
    return TestClient(create_app(settings, pipeline_factory=draft_pipeline))


def test_page_and_backends(client):
    page = client.get("/")
    assert page.status_code == 200 and "<form" in page.text and "/api/make" in page.text
    table = client.get("/api/backends").json()
    assert any(row["name"] == "offline" for row in table["llm"])


def test_make_then_fetch_files(client):
    response = client.post("/api/make", json={"query": "a corgi learns to surf", "seed": 5})
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["status"] == "ok" and record["seed"] == 5
    assert "/" not in record["run_dir"]  # no server paths in the answer
    run_id = record["run_id"]
    cover = client.get(f"/runs/{run_id}/cover.png")
    assert cover.status_code == 200 and cover.headers["content-type"] == "image/png"
    assert cover.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/runs/{run_id}/clip.mp4").status_code == 200
    assert "corgi" in client.get(f"/runs/{run_id}/report").text.lower()
    assert json.loads(client.get(f"/runs/{run_id}/record.json").text)["run_id"] == run_id


@pytest.mark.parametrize(
    "path",
    [
        "/runs/..%2F..%2Fetc/passwd",
        "/runs/20260101-000000-abcdef/..%2Frecord.json",
        "/runs/x/record.json",
        "/runs/20260101-000000-abcdef/settings.py",
        "/runs/20260101-000000-abcdef/record.json",
    ],
)
def test_no_path_escapes_and_unknown_runs_404(client, path):
    assert client.get(path).status_code == 404


def test_bad_input_gets_a_clear_error(client):
    empty = client.post("/api/make", json={"query": "   "})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    unknown = client.post("/api/make", json={"query": "q", "llm": "nope"})
    assert unknown.status_code == 400 and "available llm backends" in unknown.json()["hint"]
    assert client.post("/api/make", json={"query": "q", "variants": 99}).status_code == 422
