"""Batch throughput (issue 11): items/s against a local OpenAI-compatible server that
answers after 200 ms, rendering and scoring off.

1. K = 1, 4, 16 with the local executor, against the ideal K / 0.2 s.
2. Bookkeeping overhead per item: a batch whose LLM answers at once (in-process), minus
   the same ideation calls made directly (no store, no folders, no threads).
3. The same batch through a local Ray (num_cpus=2) against the local executor.
4. The study (``popcorn bench``'s ``run_study``, basic mode) on the same executors: 32 cells
   at K = 1 and K = 8 against the same server, against the ideal K / 0.2 s.

The server runs in its own process (as a real server would: it does not share this
process's interpreter lock). ``wall_items_s`` counts from the call to the last item,
start-up included (``start_s``: store, identity, before the first claim); ``ratio`` is
it over the ideal K / 0.2 s (n is a multiple of K, so this is ideal wall / wall);
``steady_items_s`` counts from the first finished item to the last; ``cpu_ms_item`` is
this process's CPU time (all threads, user + system) per item: on a 2-core machine
whose other core runs the server, K / 0.2 s items/s need well under 1000 / (K / 0.2)
ms per item (12.5 ms at K = 16), since K threads share one interpreter lock.

    python benchmarks/bench_batch.py [--quick] [--no-ray] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DELAY = 0.2
PHRASES = (
    "Otters at dawn", "Neon city rush", "Grandma's secret trick", "Ten second challenge",
    "Rain on a tin roof", "The last slice", "Backwards skateboard", "Midnight snack heist",
)  # fmt: skip


def idea(text: str, seed: int) -> str:
    tag = hashlib.sha256(text.split("\n\nThis is variant")[0].encode()).hexdigest()[:6]
    title = f"{PHRASES[seed % len(PHRASES)]} #{tag}"
    return json.dumps({"title": title, "cover_prompt": f"a cover: {title}",
                       "video_prompt": f"a clip: {title}"})  # fmt: skip


def serve(port_queue, delay: float) -> None:
    class Server(ThreadingHTTPServer):
        request_queue_size = 256
        daemon_threads = True

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real API servers do
        disable_nagle_algorithm = True  # headers and body go out at once

        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            time.sleep(delay)
            user = [m["content"] for m in body["messages"] if m["role"] == "user"][0]
            reply = {
                "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": idea(user, body.get("seed") or 0)}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }  # fmt: skip
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = Server(("127.0.0.1", 0), Handler)
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()


class Timer:
    """on_start / on_progress hooks: when the batch began and items finished."""

    def __init__(self):
        self.called = time.perf_counter()
        self.finished: list[float] = []
        self._seen = 0

    def progress(self, p) -> None:
        while self._seen < p.computed:
            self._seen += 1
            self.finished.append(time.perf_counter())

    def rates(self, n: int) -> dict:
        end = self.finished[-1]
        wall = n / (end - self.called)
        steady = (n - 1) / (end - self.finished[0]) if n > 1 and end > self.finished[0] else 0
        return {"wall_items_s": round(wall, 2), "steady_items_s": round(steady, 2),
                "seconds": round(end - self.called, 3),
                "start_s": round(self.started - self.called, 3)}  # fmt: skip

    def start(self, _run) -> None:
        self.started = time.perf_counter()


def api_settings(url: str):
    from llmpopcorn.core.settings import Settings

    return Settings(llm="openai", llm_base_url=url, llm_model="m", llm_api_key="sk-bench",
                    render=False, score=False)  # fmt: skip


def cpu_ms() -> float:
    """CPU time of this process (every thread, user + system), in ms."""
    times = os.times()
    return (times.user + times.system) * 1000


def run_once(url, out, k, n, executor="local", tag=""):
    from llmpopcorn.runs.batch import run_batch

    timer = Timer()
    queries = [f"bench {tag} k{k} item {i} {time.time_ns()}" for i in range(n)]
    cpu = cpu_ms()
    run = run_batch(queries, api_settings(url), out_dir=out, concurrency=k, executor=executor,
                    on_start=timer.start, on_progress=timer.progress)  # fmt: skip
    cpu = cpu_ms() - cpu
    assert run.progress.done == n, run.progress
    timer.progress(run.progress)
    return {**timer.rates(n), "cpu_ms_item": round(cpu / n, 2)}


def bare_client(url: str, k: int, n: int) -> dict:
    """The floor: the same n LLM calls from k plain threads, no batch (no store, no
    folders, no prompt building): what the HTTP client and the machine allow."""
    import threading

    from llmpopcorn.core.registry import registry
    from llmpopcorn.core.types import ChatRequest, Message

    settings = api_settings(url)
    llm = registry.create("llm", "openai", settings)
    llm.complete(ChatRequest(messages=[Message(role="user", content="warm")]))
    todo = list(range(n))
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            llm.complete(ChatRequest(messages=[Message(role="user", content=f"bare {i}")], seed=i))

    started, cpu = time.perf_counter(), cpu_ms()
    threads = [threading.Thread(target=work) for _ in range(k)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rate = n / (time.perf_counter() - started)
    return {"bare_items_s": round(rate, 2), "bare_ratio": round(rate / (k / DELAY), 3),
            "bare_cpu_ms_item": round((cpu_ms() - cpu) / n, 2)}  # fmt: skip


def overhead(out: Path, n: int) -> dict:
    """Per item: a batch (K=1) with an instant in-process LLM minus direct ideation."""
    from llmpopcorn.backends.base import LLM
    from llmpopcorn.core.settings import Settings
    from llmpopcorn.pipeline.core import Pipeline
    from llmpopcorn.pipeline.ideate import ideate
    from llmpopcorn.runs.batch import run_batch

    class Instant(LLM):
        name = "instant"

        def complete(self, request):
            return idea(request.messages[-1].content, request.seed or 0)

        def model_id(self):
            return "instant"

    settings = Settings(render=False, score=False)
    queries = [f"overhead item {i} {time.time_ns()}" for i in range(n)]
    pipeline = Pipeline(settings, llm=Instant())
    started = time.perf_counter()
    for q in queries:  # the same work, bare: prompt + ideation only
        ideate(pipeline.llm, pipeline.prompt(q), pipeline.sampling(42))
    bare = (time.perf_counter() - started) / n
    pipeline = Pipeline(settings, llm=Instant())
    timer = Timer()
    run = run_batch([q + " b" for q in queries], settings, out_dir=out, concurrency=1,
                    pipeline=pipeline, on_progress=timer.progress)  # fmt: skip
    assert run.progress.done == n
    timer.progress(run.progress)
    steady = (timer.finished[-1] - timer.finished[0]) / (n - 1)
    return {"items": n, "bare_ideation_ms": round(bare * 1000, 2),
            "batch_ms_per_item": round(steady * 1000, 2),
            "overhead_ms_per_item": round((steady - bare) * 1000, 2)}  # fmt: skip


def study_once(url: str, out: Path, k: int, n: int) -> dict:
    """``n`` study cells (basic mode, one LLM) with ``-k k``: cells per second."""
    from llmpopcorn.study.bench import BenchQuery, StudyPlan, run_study

    stamp = time.time_ns()
    queries = [BenchQuery(f"q-{i:03d}", "concrete", f"study k{k} {i} {stamp}") for i in range(n)]
    settings = api_settings(url).model_copy(update={"mode": "basic"})
    plan = StudyPlan(queries=queries, llms=["openai"], modes=["basic"])
    started = time.perf_counter()
    run = run_study(plan, settings, out, concurrency=k)
    seconds = time.perf_counter() - started
    assert run.computed == n and not run.failed, run
    ideal = k / DELAY
    return {"k": k, "cells": n, "seconds": round(seconds, 2),
            "cells_s": round(n / seconds, 2), "ratio": round(n / seconds / ideal, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer items")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--study-only", action="store_true", help="only part 4 (the study)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=serve, args=(ports, DELAY), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
    out = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    results: dict = {"load_before": os.getloadavg(), "delay_s": DELAY, "k": []}
    try:
        run_once(url, out / "warm", 2, 2, tag="warm")  # imports, first client
        results["study"] = [study_once(url, out / f"study-k{k}", k, 32) for k in (1, 8)]
        print(json.dumps(results["study"]), flush=True)
        if args.study_only:
            return
        for k in (1, 4, 16):
            n = {1: 12, 4: 64, 16: 320}[k] // (4 if args.quick else 1)
            rates = run_once(url, out / f"k{k}", k, n, tag=str(k))
            ideal = k / DELAY  # items/s; the ideal wall time is ceil(n / k) * DELAY
            row = {"k": k, "items": n, "ideal_items_s": ideal, **rates,
                   "ratio": round(rates["wall_items_s"] / ideal, 3),
                   **bare_client(url, k, n)}  # fmt: skip
            results["k"].append(row)
            print(json.dumps(row), flush=True)
        results["overhead"] = overhead(out / "overhead", 60 if args.quick else 200)
        print(json.dumps(results["overhead"]), flush=True)
        if not args.no_ray:
            from llmpopcorn.runs.executors import RayExecutor

            n, k = 64, 16
            local = run_once(url, out / "cmp-local", k, n, tag="cmp-local")
            ray = run_once(url, out / "cmp-ray", k, n, RayExecutor(num_cpus=2), tag="cmp-ray")
            results["ray_vs_local"] = {"items": n, "k": k, "local": local, "ray": ray}
            print(json.dumps(results["ray_vs_local"]), flush=True)
    finally:
        server.terminate()
    results["load_after"] = os.getloadavg()
    print(f"load average before {results['load_before']}, after {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
