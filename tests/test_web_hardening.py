"""Issue 22, reproductions 2, 6, 7 and 13 (the studio): what a request may set, and what a
package may be built from. Each test failed on the code before the fix."""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from fake_hosted_server import png_bytes  # noqa: E402
from fake_origin import FakeOrigin  # noqa: E402
from fakes import draft_pipeline  # noqa: E402
from llmpopcorn.core.errors import ConfigError, DataError  # noqa: E402
from llmpopcorn.core.settings import Settings  # noqa: E402
from llmpopcorn.web.app import create_app  # noqa: E402
from llmpopcorn.web.requests import RunRequest, settings_for  # noqa: E402

IMAGE_KEY = "sk-CANARY-image-key-5511"
FAL_KEY = "fal-CANARY-key-5512"


def settings(out_dir, **extra) -> Settings:
    return Settings.resolve(env={}, out_dir=out_dir, score=False, **extra)


def wait_for(client, job_id, timeout=120):
    """Until the job ends (the bound only stops a broken test; no speed is asserted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/api/runs/{job_id}").json()
        if view["state"] in ("done", "failed", "cancelled", "interrupted"):
            return view
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


def hosted_cover_pipeline(settings):
    """The cover from the settings' backend (a hosted one here), a small draft clip."""
    from llmpopcorn.backends.video.draft import DraftClip
    from llmpopcorn.pipeline.core import Pipeline

    return Pipeline(settings, video=DraftClip(width=72, height=128, fps=4))


# -- 2. the server's keys to a URL chosen in the request -----------------------------------


def test_a_request_cannot_send_the_servers_keys_to_a_url_it_names(out_dir, monkeypatch):
    monkeypatch.setenv("POPCORN_IMAGE_API_KEY", IMAGE_KEY)
    monkeypatch.setenv("FAL_KEY", FAL_KEY)
    app = create_app(settings(out_dir), pipeline_factory=hosted_cover_pipeline)
    picture = base64.b64encode(png_bytes(1024, 1536)).decode()
    with (
        FakeOrigin(host="localhost") as other,
        TestClient(app, base_url="http://127.0.0.1") as client,
    ):
        other.routes["/ok/v1/images/generations"] = (200, {}, {"data": [{"b64_json": picture}]})
        bodies = [
            {"image": "openai-image", "image_options": {"base_url": f"{other.url}/ok/v1"}},
            {"image": "fal-flux", "image_options": {"base_url": f"{other.url}/fal"}},
            {"video": "fal-wan", "video_options": {"base_url": f"{other.url}/fal"}},
        ]
        answers = []
        for body in bodies:
            response = client.post("/api/runs", json={"query": "a corgi", **body})
            if response.status_code == 202:  # the old code ran it
                wait_for(client, response.json()["id"])
            answers.append((response.status_code, response.json()))
    assert other.seen(IMAGE_KEY) == [] and other.seen(FAL_KEY) == []
    assert other.log == []  # nothing reached the other host at all
    for status, body in answers:
        assert status == 400 and "base_url" in body["error"] and body["hint"]


def test_request_options_are_merged_over_the_servers_and_allow_listed(out_dir):
    base = settings(out_dir, image="fal-flux", image_options={"base_url": "https://proxy.local"})
    chosen = settings_for(base, RunRequest(query="q", image_options={"steps": "4"}))
    assert chosen.image_options == {"base_url": "https://proxy.local", "steps": "4"}
    other = settings_for(base, RunRequest(query="q", image="fal-sd"))
    assert other.image_options == {}  # the server's options belong to its own backend
    for refused in ({"base_url": "x"}, {"price": "0"}, {"timeout": "1"}, {"bogus": "1"}):
        with pytest.raises(ConfigError, match="cannot set"):
            settings_for(base, RunRequest(query="q", image_options=refused))
    with pytest.raises(ConfigError, match="option 'steps'"):
        settings_for(base, RunRequest(query="q", image_options={"steps": "0"}))
    draft = settings(out_dir)
    assert settings_for(
        draft, RunRequest(query="q", image_options={"width": "720", "height": "1280"})
    ).image_options == {"width": "720", "height": "1280"}


# -- 6. server paths as models: no file-existence oracle -------------------------------------


def test_a_request_cannot_name_a_server_path_as_a_model(out_dir, tmp_path):
    existing = tmp_path / "a-real-folder"
    existing.mkdir()
    missing = tmp_path / "not-there"
    app = create_app(settings(out_dir), pipeline_factory=draft_pipeline)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answers = []
        for body in (
            {"llm": "transformers", "llm_model": str(existing)},
            {"llm": "transformers", "llm_model": str(missing)},
            {"llm": "transformers", "llm_model": "/etc/passwd"},
            {"image": "sd15", "image_options": {"model": str(existing)}},
            {"image": "sd15", "image_options": {"model": str(missing)}},
            {"video": "ltx", "video_options": {"adapter": str(existing)}},
        ):
            response = client.post("/api/runs", json={"query": "a corgi", **body})
            if response.status_code == 202:
                wait_for(client, response.json()["id"])
            answers.append((response.status_code, response.json().get("error")))
        assert client.get("/api/runs").json()["total"] == 0  # no job was made
    assert all(status == 400 for status, _ in answers), answers
    assert answers[0] == answers[1] == answers[2]  # the same answer, path there or not
    assert answers[3] == answers[4]
    for _, error in answers:
        assert str(tmp_path) not in error


def test_api_backends_may_name_a_remote_model(out_dir):
    chosen = settings_for(settings(out_dir), RunRequest(query="q", llm="ollama", llm_model="qwen"))
    assert chosen.llm_model == "qwen"


# -- 7 and 13. packages and records ------------------------------------------------------------


@pytest.fixture
def studio(out_dir):
    app = create_app(settings(out_dir), pipeline_factory=draft_pipeline)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def finished_run(client):
    job_id = client.post("/api/runs", json={"query": "a corgi learns to surf"}).json()["id"]
    assert wait_for(client, job_id)["state"] == "done"
    return job_id, client.app.state.jobs.run_dir(job_id)


def outside_picture(tmp_path):
    secret = tmp_path / "server-secret.png"
    secret.write_bytes(png_bytes(8, 14, (1, 2, 3)))
    return secret


def edit_record(run_dir, kind, path):
    record = json.loads((run_dir / "record.json").read_text())
    for artifact in record["artifacts"]:
        if artifact["kind"] == kind:
            artifact["path"] = path
    (run_dir / "record.json").write_text(json.dumps(record))


def assert_json_error(response):
    assert response.status_code in (400, 404, 409), response.status_code
    body = response.json()
    assert body["error"] and body["hint"]
    return body


def test_a_symlinked_cover_is_not_packaged(studio, tmp_path):
    job_id, run_dir = finished_run(studio)
    (run_dir / "cover.png").unlink()
    (run_dir / "cover.png").symlink_to(outside_picture(tmp_path))
    body = assert_json_error(studio.get(f"/api/runs/{job_id}/package"))
    assert "symbolic link" in body["error"]


@pytest.mark.parametrize("where", ["dotdot", "absolute"])
def test_an_artifact_path_out_of_the_run_folder_is_not_packaged(studio, tmp_path, where):
    job_id, run_dir = finished_run(studio)
    secret = outside_picture(tmp_path)
    path = str(secret) if where == "absolute" else "../../../../" + secret.name
    (run_dir.parents[2] / secret.name).write_bytes(secret.read_bytes())  # what .. would reach
    edit_record(run_dir, "cover", path)
    body = assert_json_error(studio.get(f"/api/runs/{job_id}/package"))
    assert "outside the run folder" in body["error"]
    assert str(tmp_path) not in json.dumps(body)


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda d: (d / "clip.mp4").write_bytes(b"this is not a video"), "not a readable video"),
        (lambda d: (d / "clip.mp4").write_bytes((d / "clip.mp4").read_bytes()[:1500]), "clip"),
        (lambda d: (d / "cover.png").write_text("<svg/>"), "not a readable image"),
        (lambda d: (d / "record.json").write_text('{"run_id": 12, "garbage'), "damaged"),
    ],
    ids=["not-a-video", "truncated-clip", "not-an-image", "garbage-record"],
)
def test_damaged_runs_give_a_json_error_not_a_500(studio, damage, words):
    job_id, run_dir = finished_run(studio)
    damage(run_dir)
    body = assert_json_error(studio.get(f"/api/runs/{job_id}/package"))
    assert words in body["error"]


def test_a_garbage_record_is_an_error_not_200_null(studio):
    job_id, run_dir = finished_run(studio)
    (run_dir / "record.json").write_text("{garbage")
    response = studio.get(f"/api/runs/{job_id}/files/record.json")
    assert response.status_code == 409 and "damaged" in response.json()["error"]


def test_a_sound_run_still_packages(studio):
    job_id, _ = finished_run(studio)
    response = studio.get(f"/api/runs/{job_id}/package")
    assert response.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert sorted(names) == ["clip.mp4", "cover.png", "metadata.json", "record.json"]


def test_make_package_refuses_a_symlinked_clip(tmp_path):
    """The library call (popcorn make --package) applies the same checks."""
    from llmpopcorn.pipeline.package import make_package

    pipeline = draft_pipeline(settings(tmp_path / "runs"))
    record = pipeline.make("a corgi learns to surf")
    run_dir = tmp_path / "runs" / record.run_dir.split("/")[-1]
    elsewhere = tmp_path / "other.mp4"
    (run_dir / "clip.mp4").rename(elsewhere)
    (run_dir / "clip.mp4").symlink_to(elsewhere)
    with pytest.raises(DataError, match="symbolic link"):
        make_package(run_dir)
    assert not (run_dir / "package.zip").exists()
