"""The studio under load: a real `popcorn serve` subprocess, driven over HTTP.

1. One draft job: submit-to-done time through the API (cold: the first job loads the
   pipeline and the scorer; warm: a second job).
2. N concurrent submissions (default 20, from N threads at once): every one answered 202,
   every one finishes (none lost), and `GET /api/runs` is polled every 100 ms while they
   run: its latency (median, p95, max) must stay under 200 ms.

    python benchmarks/bench_web.py [--jobs 20] [--no-score] [--draft-workers 2]

Prints a JSON summary (with the machine's load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

TERMINAL = {"done", "failed", "cancelled", "interrupted"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_done(client: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/api/runs/{job_id}").json()
        if view["state"] in TERMINAL:
            return view
        time.sleep(0.05)
    raise TimeoutError(job_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--draft-workers", type=int, default=2)
    parser.add_argument("--no-score", action="store_true", help="runs without the predictor")
    args = parser.parse_args()

    out = tempfile.mkdtemp(prefix="bench-web-")
    port = free_port()
    env = {**os.environ, "POPCORN_SCORE": "0" if args.no_score else "1"}
    cmd = [sys.executable, "-c", "from llmpopcorn.cli import main; main()", "serve"]
    cmd += ["--port", str(port), "--out", out, "--draft-workers", str(args.draft_workers)]
    load_before = os.getloadavg()
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=30)
    try:
        started = time.monotonic()
        while True:
            try:
                client.get("/api/runs")
                break
            except httpx.TransportError:
                if time.monotonic() - started > 60:
                    raise
                time.sleep(0.1)
        server_start = time.monotonic() - started

        single = []
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            response = client.post("/api/runs", json={"query": f"a corgi learns to surf ({label})"})
            accepted = time.perf_counter() - t0
            view = wait_done(client, response.json()["id"])
            single.append(
                {
                    "job": label,
                    "state": view["state"],
                    "accepted_s": round(accepted, 4),
                    "submit_to_done_s": round(time.perf_counter() - t0, 2),
                    "stages_s": view["stages"],
                }
            )

        latencies: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            with httpx.Client(base_url=base, timeout=30) as poller:
                while not stop.is_set():
                    t = time.perf_counter()
                    poller.get("/api/runs", params={"limit": 20})
                    latencies.append(time.perf_counter() - t)
                    time.sleep(0.1)

        poller = threading.Thread(target=poll)
        poller.start()

        def submit(n: int) -> tuple[int, str]:
            with httpx.Client(base_url=base, timeout=30) as c:
                r = c.post("/api/runs", json={"query": f"idea number {n} for a cooking video"})
                return r.status_code, r.json().get("id", "")

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.jobs) as pool:
            answers = list(pool.map(submit, range(args.jobs)))
        all_accepted = time.perf_counter() - t0
        states = [wait_done(client, job_id)["state"] for _, job_id in answers]
        total = time.perf_counter() - t0
        stop.set()
        poller.join()
        listed = client.get("/api/runs", params={"limit": 200}).json()
        latencies_ms = sorted(x * 1000 for x in latencies)
        summary = {
            "server_start_s": round(server_start, 2),
            "single": single,
            "concurrent": {
                "jobs": args.jobs,
                "draft_workers": args.draft_workers,
                "status_codes": sorted({code for code, _ in answers}),
                "all_accepted_s": round(all_accepted, 3),
                "all_done_s": round(total, 2),
                "states": {s: states.count(s) for s in sorted(set(states))},
                "in_history": sum(r["id"] in {i for _, i in answers} for r in listed["runs"]),
                "api_runs_polls": len(latencies_ms),
                "api_runs_ms_median": round(statistics.median(latencies_ms), 1),
                "api_runs_ms_p95": round(latencies_ms[int(0.95 * (len(latencies_ms) - 1))], 1),
                "api_runs_ms_max": round(latencies_ms[-1], 1),
            },
            "scored": not args.no_score,
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
        }
        print(json.dumps(summary, indent=2))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
