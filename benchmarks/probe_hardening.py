"""Issue 22: the hostile probe list (keys, addresses, bounds, kill -9, SIGTERM, disk full,
restart, corruption, secrets canary) run against local fakes only.

    python benchmarks/probe_hardening.py OUT_DIR [FULL_DIR]

Fake keys (sk-CANARY-...) are in the environment of every process; fakes listen on 127.0.0.1
(the configured origins) and localhost (another origin). Every probe prints one line; at the
end every output file, log and store under OUT_DIR is grepped for the canaries and the fakes'
request logs are printed as the network log (which origin saw which key). FULL_DIR, when
given, is a small filesystem to fill for the disk-full probe (e.g. a 2 MiB tmpfs).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fake_hosted_server import png_bytes  # noqa: E402
from fake_openai_server import FakeOpenAIServer, completion  # noqa: E402
from fake_origin import FakeOrigin  # noqa: E402

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "probe-out").resolve()
FULL = Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else None
KEYS = {
    "OPENAI_API_KEY": "sk-CANARY-openai-0001",
    "POPCORN_LLM_API_KEY": "sk-CANARY-llm-0002",
    "POPCORN_IMAGE_API_KEY": "sk-CANARY-image-0003",
    "FAL_KEY": "fal-CANARY-key-0004",
    "DEEPSEEK_API_KEY": "sk-CANARY-deepseek-0005",
    "PEXELS_API_KEY": "px-CANARY-pexels-0006",
    "PIXABAY_API_KEY": "pb-CANARY-pixabay-0007",
}
IDEA = {"title": "Corgi surf lesson", "cover_prompt": "a corgi", "video_prompt": "it surfs"}
ENV = {**os.environ, **KEYS, "PYTHONPATH": str(REPO / "src")}
CLI = [sys.executable, "-c", "from llmpopcorn.cli import main; main()"]
results: list[tuple[str, str, str]] = []
logs: list[Path] = []


def note(probe: str, ok: bool, detail: str) -> None:
    results.append((probe, "ok" if ok else "FAIL", detail))
    print(f"[{'ok' if ok else 'FAIL'}] {probe}: {detail}", flush=True)


def popcorn(name: str, *args, env=None, timeout=300, stdin=None) -> subprocess.CompletedProcess:
    out = ROOT / "logs" / f"{name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [*CLI, *map(str, args)],
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=stdin,
    )
    out.write_text(
        f"$ popcorn {' '.join(map(str, args))}\nrc={done.returncode}\n{done.stdout}\n{done.stderr}"
    )
    logs.append(out)
    return done


def clean(done) -> bool:
    text = done.stdout + done.stderr
    return done.returncode == 2 and "error:" in text and "hint:" in text and "Traceback" not in text


def llm_args(llm) -> list[str]:
    return ["--llm", "openai", "--llm-base-url", llm.url, "--llm-model", "m"]


def main() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    with (
        FakeOpenAIServer(responder=lambda body: (200, completion(json.dumps(IDEA)))) as llm,
        FakeOrigin() as fal,
        FakeOrigin(host="localhost") as other,
    ):
        servers = {
            "llm 127.0.0.1 (configured LLM)": llm,
            "fal 127.0.0.1 (configured fal)": fal,
            "other localhost (never configured)": other,
        }
        fal.routes["/fal-ai/flux/schnell"] = (
            200,
            {},
            {
                "request_id": "r1",
                "status_url": f"{other.url}/st",
                "response_url": f"{other.url}/res",
            },
        )
        other.routes["/st"] = (200, {}, {"status": "COMPLETED"})
        other.routes["/res"] = (200, {}, {"images": [{"url": f"{other.url}/c.png"}]})
        other.routes["/c.png"] = (200, {}, png_bytes(720, 1280))
        fal.routes["/fal-ai/flux/dev"] = (
            200,
            {},
            {
                "request_id": "r2",
                "status_url": "http://169.254.169.254/latest/meta-data/",
                "response_url": f"{fal.url}/x",
            },
        )

        # -- make: hosted cover with answers naming another origin --------------------------------
        out = ROOT / "make"
        done = popcorn(
            "make-fal",
            "make",
            "a corgi learns to surf",
            *llm_args(llm),
            "--image",
            "fal-flux",
            "--image-opt",
            f"base_url={fal.url}",
            "--package",
            "--out",
            out,
        )
        note(
            "make (LLM + fal cover, answers on another origin) + package",
            done.returncode == 0,
            f"rc={done.returncode}; other origin got {len(other.log)} requests",
        )
        done = popcorn(
            "make-ssrf",
            "make",
            "a corgi",
            *llm_args(llm),
            "--image",
            "fal-flux",
            "--image-opt",
            f"base_url={fal.url}",
            "--image-opt",
            "model=fal-ai/flux/dev",
            "--out",
            out,
        )
        note(
            "make: fal status_url at 169.254.169.254",
            clean(done) and "link-local" in done.stderr,
            done.stderr.strip().splitlines()[0][:150] if done.stderr else "",
        )
        done = popcorn(
            "make-opts",
            "make",
            "a corgi",
            "--image-opt",
            "width=-5",
            "--image-opt",
            "bogus=1",
            "--out",
            out,
        )
        note("make --image-opt width=-5 bogus=1", clean(done), done.stderr.strip()[:150])

        # -- SIGTERM during make (stalled LLM) ----------------------------------------------------
        with FakeOpenAIServer(delay=120) as slow:
            slow.queue(200, completion(json.dumps(IDEA)))
            proc = subprocess.Popen(
                [*CLI, "make", "a corgi", *llm_args(slow), "--out", ROOT / "sigterm"],
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 120
            while not slow.chat_requests and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            (ROOT / "logs" / "sigterm.log").write_text(err)
            logs.append(ROOT / "logs" / "sigterm.log")
            record = json.loads(next((ROOT / "sigterm").glob("*/record.json")).read_text())
            note(
                "SIGTERM during make",
                proc.returncode == 143 and record["status"] == "interrupted",
                f"rc={proc.returncode}, record status {record['status']}",
            )

        # -- batch: kill -9 mid-run, resume -------------------------------------------------------
        qfile = ROOT / "queries.txt"
        qfile.write_text(
            "\n".join(f"query {i}: a corgi {w}" for i, w in enumerate("abcdef")) + "\n"
        )
        with FakeOpenAIServer(
            delay=0.3,
            responder=lambda b: (
                200,
                completion(
                    json.dumps(
                        {
                            **IDEA,
                            "title": f"Corgi {b.get('seed')} {len(b['messages'][-1]['content'])}",
                        }
                    )
                ),
            ),
        ) as bl:
            bout = ROOT / "batch"
            proc = subprocess.Popen(
                [*CLI, "batch", qfile, "-k", "2", "--no-render", "--out", bout, *llm_args(bl)],
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            batch_id = proc.stdout.readline().strip()
            deadline = time.monotonic() + 120
            while len(bl.chat_requests) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.kill()
            proc.wait()
            done = popcorn(
                "batch-resume", "batch", "--resume", batch_id, "--out", bout, *llm_args(bl)
            )
            with sqlite3.connect(bout / "store.sqlite") as db:
                rows = db.execute("select status, count(*) from items group by status").fetchall()
            note(
                "batch kill -9 then --resume",
                done.returncode == 0 and rows == [("ok", 6)],
                f"store after resume {rows}",
            )
        for name, args in {
            "-k 99999999": ["-k", "99999999"],
            "--variants -1": ["--variants", "-1"],
            "--variants 1000000": ["--variants", "1000000"],
            "--render-slots 0": ["--render-slots", "0"],
        }.items():
            done = popcorn(
                f"batch{args[0]}{args[1]}", "batch", qfile, "--out", ROOT / "batch-bad", *args
            )
            note(f"batch {name}", clean(done), done.stderr.strip().splitlines()[0][:120])
        done = popcorn(
            "batch-devzero", "batch", "/dev/zero", "--out", ROOT / "batch-bad", timeout=60
        )
        note("batch /dev/zero", clean(done), done.stderr.strip().splitlines()[0][:120])
        (ROOT / "batch-bad").mkdir(parents=True, exist_ok=True)
        (ROOT / "batch-bad" / "store.sqlite").write_bytes(b"garbage" * 100)
        done = popcorn("batch-corrupt-store", "batch", qfile, "--out", ROOT / "batch-bad")
        note(
            "batch on a corrupt store.sqlite",
            clean(done),
            done.stderr.strip().splitlines()[0][:120],
        )

        # -- disk full ----------------------------------------------------------------------------
        if FULL is not None:
            disk_full()

        # -- predictor folder with NaN weights ----------------------------------------------------
        import numpy as np

        model = ROOT / "nan-model"
        src = REPO / "src" / "llmpopcorn" / "predict" / "models" / "default"
        model.mkdir(exist_ok=True)
        (model / "config.json").write_text((src / "config.json").read_text())
        arrays = dict(np.load(src / "weights.npz"))
        arrays["stack_coef_"][:] = np.nan
        np.savez(model / "weights.npz", **arrays)
        done = popcorn("score-nan", "score", "--title", "a corgi", "--model", model)
        note(
            "score with NaN weights",
            clean(done) and "unusable" in done.stderr,
            done.stderr.strip().splitlines()[0][:120],
        )

        # -- studio: serve with keys, hostile requests, package, restart --------------------------
        studio(llm, other)
        # -- MCP ----------------------------------------------------------------------------------
        mcp_probe()

        # -- network log --------------------------------------------------------------------------
        print("\n== network log (fake servers' own request logs) ==")
        for label, srv in servers.items():
            entries = (
                srv.requests if hasattr(srv, "requests") and not hasattr(srv, "log") else srv.log
            )
            for entry in entries:
                blob = json.dumps(entry)
                carried = [k for k, v in KEYS.items() if v in blob]
                path = entry["path"].split("?")[0]
                print(
                    f"{label:38} {entry.get('method', 'POST'):5} {path[:48]:48} "
                    f"keys: {', '.join(carried) or '-'}"
                )
        foreign = [k for k, v in KEYS.items() if other.seen(v)]
        note(
            "no key on the unconfigured origin (localhost)",
            not foreign,
            f"{len(other.log)} requests, keys seen: {foreign or 'none'}",
        )
    canary_grep()


def disk_full() -> None:
    """Fill FULL_DIR but for ~100 KiB, then make a run there."""
    filler = FULL / "filler"
    free = os.statvfs(FULL).f_bavail * os.statvfs(FULL).f_frsize
    try:
        filler.write_bytes(b"\0" * max(0, free - 100 * 1024))
    except OSError:
        pass
    done = popcorn("make-diskfull", "make", "a corgi", "--out", FULL / "runs")
    last = done.stderr.strip().splitlines()[-2:] if done.stderr else []
    note("make on a full disk", clean(done), " / ".join(last)[:160])
    filler.unlink(missing_ok=True)


def studio(llm, other) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sout = ROOT / "studio"
    log = (ROOT / "logs" / "serve.log").open("w")
    logs.append(ROOT / "logs" / "serve.log")
    args = [*CLI, "serve", "--port", str(port), "--out", sout, *llm_args(llm)]
    senv = {**ENV, "POPCORN_SCORE": "0"}
    server = subprocess.Popen(args, env=senv, stdout=log, stderr=subprocess.STDOUT)
    import httpx

    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{base}/api/runs", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        hostile = {
            "image base_url to another host": {
                "image": "openai-image",
                "image_options": {"base_url": f"{other.url}/ok/v1"},
            },
            "fal base_url to another host": {
                "image": "fal-flux",
                "image_options": {"base_url": f"{other.url}/fal"},
            },
            "transformers model = server path": {"llm": "transformers", "llm_model": "/etc/passwd"},
            "sd15 model = server folder": {"image": "sd15", "image_options": {"model": "/root"}},
            "LLM URL chosen while the server holds keys": {
                "llm": "llamacpp",
                "llm_base_url": f"{other.url}/v1",
            },
        }
        for name, body in hostile.items():
            r = httpx.post(f"{base}/api/runs", json={"query": "a corgi", **body}, timeout=60)
            note(
                f"studio: {name}",
                r.status_code == 400,
                f"HTTP {r.status_code} {r.json().get('error', '')[:90]}",
            )
        job = httpx.post(
            f"{base}/api/runs", json={"query": "a corgi learns to surf"}, timeout=60
        ).json()["id"]
        for _ in range(1200):
            view = httpx.get(f"{base}/api/runs/{job}", timeout=30).json()
            if view["state"] in ("done", "failed"):
                break
            time.sleep(0.1)
        pkg = httpx.get(f"{base}/api/runs/{job}/package", timeout=120)
        (ROOT / "studio-package.zip").write_bytes(pkg.content)
        note(
            "studio: a run and its package",
            view["state"] == "done" and pkg.status_code == 200,
            f"{view['state']}, package HTTP {pkg.status_code}",
        )
        run_dir = next((sout / "web" / job).iterdir())
        (run_dir / "cover.png").unlink()
        (run_dir / "cover.png").symlink_to("/etc/hostname")
        r = httpx.get(f"{base}/api/runs/{job}/package", timeout=60)
        note(
            "studio: package with a symlinked cover",
            r.status_code in (400, 409) and "hint" in r.json(),
            f"HTTP {r.status_code} {r.json().get('error', '')[:80]}",
        )
        (run_dir / "record.json").write_text("{garbage")
        r1 = httpx.get(f"{base}/api/runs/{job}/files/record.json", timeout=60)
        r2 = httpx.get(f"{base}/api/runs/{job}/package", timeout=60)
        note(
            "studio: garbage record.json",
            r1.status_code == 409 and r2.status_code == 400,
            f"file HTTP {r1.status_code}, package HTTP {r2.status_code}",
        )
        queued = httpx.post(
            f"{base}/api/runs", json={"query": "a corgi restart"}, timeout=60
        ).json()["id"]
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    # restart after kill -9: history kept, nothing lost
    server = subprocess.Popen(args, env=senv, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                runs = httpx.get(f"{base}/api/runs", timeout=5).json()
                break
            except httpx.TransportError:
                time.sleep(0.1)
        ids = {r["id"] for r in runs["runs"]}
        for _ in range(1200):
            state = httpx.get(f"{base}/api/runs/{queued}", timeout=30).json()["state"]
            if state not in ("queued", "running"):
                break
            time.sleep(0.1)
        note(
            "studio: kill -9 then restart",
            {job, queued} <= ids and state in ("done", "interrupted"),
            f"history {len(ids)} runs, the last job {state}",
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


def mcp_probe() -> None:
    import anyio
    from mcp import StdioServerParameters
    from mcp.client import Client

    err = (ROOT / "logs" / "mcp-stderr.log").open("w")
    logs.append(ROOT / "logs" / "mcp-stderr.log")
    errfile = ROOT / "logs" / "mcp-stderr.log"
    cli = "from llmpopcorn.cli import main; main()"
    command = f"exec {sys.executable} -c '{cli}' mcp --out {ROOT / 'mcp'} 2>>{errfile}"
    params = StdioServerParameters(
        command="bash", args=["-c", command], env={**ENV, "POPCORN_SCORE": "0"}
    )

    async def session():
        async with Client(params, read_timeout_seconds=300) as client:
            made = await client.call_tool("make_run", {"query": "a corgi \u202elearns to surf"})
            text = made.content[0].text
            note(
                "mcp make_run with U+202E in the query",
                not made.is_error and "\u202e" not in text,
                "answer escaped" if "\\u202e" in text else text[:80],
            )
            rid = json.loads(text)["id"]
            record = next((ROOT / "mcp" / "web" / rid).iterdir()) / "record.json"
            record.write_text("{garbage")
            bad = await client.call_tool("get_run", {"run_id": rid})
            note(
                "mcp get_run on a garbage record",
                bad.is_error and "damaged" in bad.content[0].text,
                bad.content[0].text[:90],
            )
            huge = await client.call_tool("get_run", {"run_id": "a" * 1_000_000})
            note(
                "mcp get_run with a 1 MB id",
                huge.is_error and len(huge.content[0].text) < 300,
                f"{len(huge.content[0].text)} characters back",
            )
            refs = await client.call_tool(
                "build_pe_prompt", {"query": "q", "n_refs": 1_000_000_000}
            )
            note(
                "mcp build_pe_prompt n_refs=1e9",
                refs.is_error and "n_refs" in refs.content[0].text,
                refs.content[0].text[:90],
            )

    anyio.run(session)
    err.close()
    stderr = (ROOT / "logs" / "mcp-stderr.log").read_text()
    note("mcp: no traceback on stderr", "Traceback" not in stderr, f"{len(stderr)} bytes of stderr")


def canary_grep() -> None:
    print("\n== canary grep ==")
    roots = [ROOT] + ([FULL] if FULL is not None else [])
    files = [p for root in roots for p in root.rglob("*") if p.is_file()]
    hits = []
    for path in files:
        data = path.read_bytes()
        for name, value in KEYS.items():
            if value.encode() in data:
                hits.append(f"{path}: {name}")
    note(
        "canary grep over every output file, log, record and store",
        not hits,
        f"{len(files)} files, {sum(p.stat().st_size for p in files):,} bytes, "
        f"hits: {hits or 'none'}",
    )


if __name__ == "__main__":
    main()
    print("\n== summary ==")
    for probe, status, detail in results:
        print(f"| {probe} | {status} | {detail} |")
