"""Secrets never leave the process: one scrubber (llmpopcorn.core.redact), applied to records,
reports, logs, CLI messages, web API responses and LLM replies.

The canary test runs every user-facing command with a known key, against a local
OpenAI-compatible server that echoes the key inside its replies, and greps every
output, log line and written file for it.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fake_openai_server import FakeOpenAIServer, completion
from llmpopcorn.cli import main
from pe_fixtures import write_corpus

CANARY = "sk-canary-5f2b9c1e7a4d4e0f8b3c6a9d"
ECHO_IDEA = {
    "title": "Surf {API_KEY}",
    "cover_prompt": "a corgi on a board, key {API_KEY}",
    "video_prompt": "it surfs; the server says {API_KEY}",
}


@pytest.fixture
def canary_env(monkeypatch):
    for name in ("POPCORN_LLM_API_KEY", "OPENAI_API_KEY", "DEEPSEEK_API_KEY"):
        monkeypatch.setenv(name, CANARY)
    return CANARY


@pytest.fixture
def data_dir(tmp_path):
    root = write_corpus(tmp_path / "data")
    prompts = root / "prompts"
    prompts.mkdir()
    (prompts / "abstract_prompts.txt").write_text("Something nostalgic\n")
    (prompts / "concrete_prompts.txt").write_text("A corgi learns to surf\n")
    return root


@pytest.fixture
def tiny_model(tmp_path, data_dir):
    from llmpopcorn.predict import load_table
    from llmpopcorn.predict.baselines import CategoryMean

    table, _ = load_table(data_dir)
    return CategoryMean().fit(table).save(tmp_path / "model")


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_canary_key_appears_in_no_output_log_or_file(
    tmp_path, canary_env, data_dir, tiny_model, caplog
):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out"
    outputs: list[str] = []

    def popcorn(*args, **env):
        result = CliRunner().invoke(main, ["-vv", *map(str, args)], env=env or None)
        outputs.append(result.output)
        return result

    with FakeOpenAIServer(echo_key=True) as srv:
        srv.queue(200, completion(json.dumps(ECHO_IDEA)))
        llm = ["--llm", "openai", "--llm-base-url", srv.url, "--llm-model", "m"]
        env = {"POPCORN_PREDICTOR": str(tiny_model), "POPCORN_DATA": str(data_dir)}
        # basic make: offline LLM, draft renders, scored
        made = popcorn("make", "a corgi learns to surf", "--out", out, **env)
        assert made.exit_code == 0, made.output
        # make with an LLM that echoes the key in every field
        echoed = popcorn("make", "a corgi learns to surf", *llm, "--out", out, "--json", **env)
        assert echoed.exit_code == 0, echoed.output
        record = json.loads(echoed.stdout)
        assert record["idea"]["title"] == "Surf ***"  # the reply was scrubbed at the source
        assert len(srv.chat_requests) == 1
        assert srv.chat_requests[0]["headers"]["authorization"] == f"Bearer {CANARY}"
        # the LLM fails and its error message echoes the key
        srv.responses.clear()
        srv.queue(400, {"error": {"message": "bad request from key {API_KEY}"}})
        failed = popcorn("make", "a corgi", *llm, "--llm-max-retries", "0", "--out", out, **env)
        assert failed.exit_code == 2 and "HTTP 400" in failed.stderr
        # the study, one cell, through the same server
        srv.responses.clear()
        srv.queue(200, completion(json.dumps(ECHO_IDEA)))
        bench = popcorn(
            "bench", "--llm", "openai", "--limit", "1", "--no-render", "--mode", "basic",
            "--queries", "concrete", "--baseline-k", "0", "--out", tmp_path / "study",
            POPCORN_LLM_BASE_URL=srv.url, POPCORN_LLM_MODEL="m", **env,
        )  # fmt: skip
        assert bench.exit_code == 0, bench.output
        # a batch (when this checkout has it), then its listing and export
        if "batch" in main.commands:
            queries = tmp_path / "queries.txt"
            queries.write_text("a corgi learns to surf\n")
            batches = tmp_path / "batches"
            asked = len(srv.chat_requests)
            batch = popcorn(
                "batch", queries, *llm, "--no-render", "--out", batches, "--json", **env
            )
            assert batch.exit_code == 0, batch.output
            assert len(srv.chat_requests) > asked  # the batch asked the echoing server
            listed = popcorn("runs", "list", "--out", batches, "--json")
            assert listed.exit_code == 0, listed.output
            (batch_id,) = [row["batch"] for row in json.loads(listed.stdout)]
            for args in (["show", batch_id], ["export", batch_id, "--json"]):
                shown = popcorn("runs", *args, "--out", batches)
                assert shown.exit_code == 0, shown.output
    for args in (
        ["prompt", "a corgi learns to surf", "--json"],
        ["score", "--title", "a corgi", "--model", tiny_model, "--json"],
        ["backends", "--json"],
        ["corpus", "info", "--json"],
    ):
        result = popcorn(*args, **env)
        assert result.exit_code == 0, (args, result.output)

    written = _all_files(tmp_path)
    assert any(p.name == "record.json" for p in written)
    assert any(p.name == "report.html" for p in written)
    assert any(p.name == "store.sqlite" for p in written)
    for text in outputs + [caplog.text]:
        assert CANARY not in text
    for path in written:
        assert CANARY.encode() not in path.read_bytes(), path


def _web_run(client, routes: set[str], body: dict) -> tuple[dict | None, list[str]]:
    """One run through the web API (the synchronous ``/api/make`` or the job queue's
    ``/api/runs``): its record (``None`` if it failed) and every page it served."""
    if "/api/make" in routes:
        answer = client.post("/api/make", json=body)
        if answer.status_code != 200:
            return None, [answer.text]
        run_id = answer.json()["run_id"]
        files = [client.get(f"/runs/{run_id}/{name}") for name in ("record.json", "report")]
        return answer.json(), [answer.text, *(f.text for f in files)]
    job_id = client.post("/api/runs", json=body).json()["id"]
    deadline = time.monotonic() + 60
    while (view := client.get(f"/api/runs/{job_id}")).json()["state"] not in (
        "done",
        "failed",
    ):
        assert time.monotonic() < deadline, view.text
        time.sleep(0.05)
    files = [client.get(f"/api/runs/{job_id}/files/{n}") for n in ("record.json", "report.html")]
    record = view.json().get("record") if view.json()["state"] == "done" else None
    return record, [view.text, *(f.text for f in files)]


def test_web_api_responses_never_carry_the_key(tmp_path, canary_env):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from llmpopcorn.core.settings import Settings
    from llmpopcorn.web.app import create_app

    with FakeOpenAIServer(echo_key=True) as srv:
        srv.queue(200, completion(json.dumps(ECHO_IDEA)))
        settings = Settings.resolve(
            llm_base_url=srv.url,
            llm_model="m",
            llm_max_retries=0,
            out_dir=str(tmp_path),
            score=False,
            render=False,
        )
        app = create_app(settings)
        routes = {getattr(r, "path", "") for r in app.routes}
        # the job API takes the LLM per request (the key typed in the page); the
        # synchronous one ignores these fields and uses the server's settings
        llm = {"llm": "openai", "llm_base_url": srv.url, "llm_model": "m", "llm_api_key": CANARY}
        with TestClient(app, base_url="http://127.0.0.1") as client:
            record, pages = _web_run(client, routes, {"query": "a corgi", **llm})
            assert record is not None and record["idea"]["title"] == "Surf ***"
            srv.responses.clear()
            srv.queue(400, {"error": {"message": "bad key {API_KEY}"}})
            failed, more = _web_run(client, routes, {"query": "a cat", **llm})
            assert failed is None and any("HTTP 400" in page for page in more)
    for page in pages + more:
        assert CANARY not in page


# -- the scrubber itself ------------------------------------------------------------------


def test_scrub_covers_escaped_forms_and_nested_data(monkeypatch):
    from llmpopcorn.core.redact import register_secret, scrub, scrub_data

    key = 'sk-<odd>&"key"/+=0123'
    register_secret(key)
    import html
    from urllib.parse import quote

    for form in (key, html.escape(key), json.dumps(key)[1:-1], quote(key, safe="")):
        assert scrub(f"before {form} after") == "before *** after"
    assert scrub_data({"a": [key, ("x", key)], key: 1}) == {"a": ["***", ("x", "***")], "***": 1}


def test_provider_key_variables_are_secrets_but_short_values_are_not(monkeypatch):
    from llmpopcorn.core.redact import scrub

    monkeypatch.setenv("SOMEVENDOR_API_KEY", "vendor-key-123456")
    monkeypatch.setenv("POPCORN_LLM_API_KEY", "x")  # too short to be a key: not scrubbed
    assert scrub("vendor-key-123456 and x") == "*** and x"


def test_log_filter_scrubs_messages_arguments_and_tracebacks(canary_env):
    from llmpopcorn.core.redact import SecretFilter

    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "key %s", (CANARY,), None)
    try:
        raise ValueError(f"boom {CANARY}")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert SecretFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert CANARY not in formatted and "key ***" in formatted and "boom ***" in formatted


@pytest.fixture
def uvicorn_loggers():
    """Put uvicorn's loggers back as they were: the tests reconfigure them."""
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), list(logger.filters), logger.level, logger.propagate)
    yield
    for name, (handlers, filters, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.filters[:] = handlers, filters
        logger.setLevel(level)
        logger.propagate = propagate


def _configure_serve_logging(verbose: int) -> io.StringIO:
    """Apply `popcorn serve`'s uvicorn logging options, with every handler writing into
    one buffer instead of the terminal."""
    import logging.config

    pytest.importorskip("uvicorn")
    from llmpopcorn.cli.serve import uvicorn_logging

    options = uvicorn_logging(verbose)
    buffer = io.StringIO()
    for handler in options["log_config"]["handlers"].values():
        handler["stream"] = buffer
    logging.config.dictConfig(options["log_config"])
    logging.getLogger("uvicorn").setLevel(options["log_level"].upper())
    return buffer


def test_serve_scrubs_secrets_from_uvicorn_access_lines_and_tracebacks(canary_env, uvicorn_loggers):
    buffer = _configure_serve_logging(verbose=1)
    # what uvicorn's httptools/h11 protocols log for each request
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5555", "GET", f"/api/runs?api_key={CANARY}",
        "1.1", 200,
    )  # fmt: skip
    try:
        raise RuntimeError(f"upstream said: Authorization: Bearer {CANARY}")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("uvicorn.error").warning("bad header %r", {"authorization": CANARY})
    text = buffer.getvalue()
    assert CANARY not in text, text
    # the access line keeps uvicorn's format (its formatter unpacks the arguments)
    assert '"GET /api/runs?api_key=*** HTTP/1.1" 200' in text
    assert "Bearer ***" in text and "Exception in ASGI application" in text
    assert "bad header {'authorization': '***'}" in text
    assert "Logging error" not in text


def test_serve_logs_no_request_lines_unless_verbose(canary_env, uvicorn_loggers):
    from llmpopcorn.cli.serve import uvicorn_logging

    assert uvicorn_logging(0)["access_log"] is False
    assert uvicorn_logging(1)["access_log"] is True
    for options in (uvicorn_logging(0), uvicorn_logging(2)):
        handlers = options["log_config"]["handlers"]
        assert handlers and all("popcorn_secrets" in h["filters"] for h in handlers.values())


def test_log_filter_keeps_argument_shapes_and_leaves_clean_records_alone(canary_env):
    from llmpopcorn.core.redact import SecretFilter

    clean = logging.LogRecord("t", logging.INFO, __file__, 1, "%s took %.1f s", ("x", 2.0), None)
    assert SecretFilter().filter(clean) and clean.args == ("x", 2.0)
    dirty = logging.LogRecord("t", logging.INFO, __file__, 1, "%s %d", (CANARY, 3), None)
    assert SecretFilter().filter(dirty) and dirty.args == ("***", 3)
    split = logging.LogRecord(
        "t", logging.INFO, __file__, 1, CANARY[:9] + "%s", (CANARY[9:],), None
    )
    assert SecretFilter().filter(split) and split.getMessage() == "***"
