"""Benchmark (issue 14): how fast the tool is from the first second, torch vs ONNX.

Measures, in one run and on the same machine:

* start-up: ``popcorn --help`` and ``popcorn backends`` wall time, and a
  ``python -X importtime`` summary of ``import llmpopcorn.cli`` (the slowest modules);
* cold ``popcorn make`` (draft cover + clip, scored) wall time, one process per run,
  with the ``minilm`` embedder on torch (today's path, ``POPCORN_MINILM_ENGINE=torch``)
  and on ONNX Runtime (the new default);
* warm score: one idea scored repeatedly in one process (median ms), both engines,
  ``--repeat`` processes (the median of their medians);
* first-run index build: embedding rate of both engines on the same sample of corpus
  texts, and the full new-path build (16,740 rows, predictor-memory reuse) plus a
  first PE answer (``popcorn prompt --mode pe``) on an empty embedding cache;
* draft clip render + encode (3 s, 540x960);
* retrieval at 1,000,000 rows (random unit vectors, memory-mapped): exact vs
  approximate (faiss IVF) build time, peak memory and warm query latency, and
  recall@50 of the approximate index on those vectors, each in its own process.

    python benchmarks/bench_speed.py --data /path/to/data --out speed.json

``--skip`` leaves parts out (e.g. ``--skip index1m torch``). The ONNX file is exported
once before the timings (a warm-up run says how long it took); pass ``--cache-dir`` to
reuse an export between runs. Every number comes with ``uptime``'s load average: on a
shared machine wall times grow with the load, CPU times much less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUERY = "a corgi learns to surf"
PARTS = ("startup", "make", "score", "index", "pe", "clip", "index1m", "torch")


def load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
    except OSError:
        return "?"


def run(cmd: list[str], env: dict[str, str], *, check: bool = True) -> tuple[float, float, str]:
    """Wall and CPU seconds (children) of one command, and its stderr."""
    before = os.times()
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, cpu, proc.stderr


def timed(cmd, env, repeat=3, **kw) -> dict:
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu, _ = run(cmd, env, **kw)
        walls.append(wall)
        cpus.append(cpu)
    return {
        "wall_s": round(statistics.median(walls), 3),
        "cpu_s": round(statistics.median(cpus), 3),
        "runs": [round(w, 3) for w in walls],
        "load": load(),
    }


def popcorn() -> list[str]:
    return [sys.executable, "-c", "from llmpopcorn.cli import main; main()"]


# -- parts -----------------------------------------------------------------------------


def bench_startup(env) -> dict:
    out = {
        "help": timed([*popcorn(), "--help"], env),
        "backends": timed([*popcorn(), "backends"], env),
    }
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import llmpopcorn.cli"],
        env=env,
        capture_output=True,
        text=True,
    )
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), int(m.group(1)), m.group(4)))
    rows.sort(reverse=True)
    out["importtime_top"] = [
        {"module": name, "cumulative_ms": round(cum / 1000, 1), "self_ms": round(own / 1000, 1)}
        for cum, own, name in rows[:12]
    ]
    out["heavy_at_start"] = sorted(
        {n for _, _, n in rows if n.split(".")[0] in ("torch", "transformers", "onnxruntime")}
    )
    return out


def bench_make(env, engine: str, runs_dir: Path, repeat: int) -> dict:
    env = {**env, "POPCORN_MINILM_ENGINE": engine}
    cmd = [*popcorn(), "make", QUERY, "--out", str(runs_dir)]
    return timed(cmd, env, repeat=repeat)


SCORE_CODE = """
import json, statistics, sys, time
t0 = time.perf_counter()
from llmpopcorn.predict.scorer import load_scorer
scorer = load_scorer()
scorer.score_text("warm-up", "a cover", "a clip")
ready = time.perf_counter() - t0
times = []
for i in range(int(sys.argv[1])):
    t = time.perf_counter()
    scorer.score_text(f"A corgi learns to surf, take {i}", "corgi on a board", "waves")
    times.append(time.perf_counter() - t)
median = round(1000 * statistics.median(times), 2)
p95 = round(1000 * sorted(times)[int(0.95 * len(times))], 2)
print(json.dumps({"ready_s": round(ready, 3), "median_ms": median, "p95_ms": p95}))
"""


def bench_score(env, engine: str, n: int = 50, repeat: int = 1) -> dict:
    """``repeat`` processes of ``n`` warm scores each: the median of their medians
    (``median_ms``), each process's figures under ``runs``, the load at each end."""
    env = {**env, "POPCORN_MINILM_ENGINE": engine}
    runs = []
    for _ in range(max(repeat, 1)):
        proc = subprocess.run(
            [sys.executable, "-c", SCORE_CODE, str(n)], env=env, capture_output=True, text=True
        )
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        runs.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "load": load()})
    return {
        "median_ms": round(statistics.median(r["median_ms"] for r in runs), 2),
        "p95_ms": round(statistics.median(r["p95_ms"] for r in runs), 2),
        "ready_s": round(statistics.median(r["ready_s"] for r in runs), 3),
        "load": runs[-1]["load"],
        "runs": runs,
    }


RATE_CODE = """
import json, sys, time
from llmpopcorn.corpus.table import load_corpus
from llmpopcorn.corpus.index import get_embedder
texts = load_corpus(sys.argv[1]).texts[:: int(sys.argv[2])][: int(sys.argv[3])]
emb = get_embedder("minilm")
emb.embed(["warm-up"])
t, c = time.perf_counter(), time.process_time()
for i in range(0, len(texts), 512):
    emb.embed(texts[i : i + 512])
wall, cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"texts": len(texts), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                  "per_s": round(len(texts) / wall, 1), "per_cpu_s": round(len(texts) / cpu, 1)}))
"""


def bench_rate(env, engine: str, data: str, sample: int) -> dict:
    env = {**env, "POPCORN_MINILM_ENGINE": engine}
    proc = subprocess.run(
        [sys.executable, "-c", RATE_CODE, data, "8", str(sample)],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": load()}


PE_QUERY_CODE = """
import json, statistics, sys, time
from llmpopcorn.pipeline.core import Pipeline
from llmpopcorn.core.settings import Settings
pipeline = Pipeline(Settings.resolve(mode="pe", score=False))
t = time.perf_counter()
pipeline.prompt("warm-up: a cat video")
first = time.perf_counter() - t
queries = ["a corgi learns to surf", "street food in Bangkok at night",
           "speedrun of a castle level", "makeup tutorial for glass skin",
           "a kpop dance cover in the rain", "grandma's dumplings",
           "funny cat fails compilation", "a day in the life of a nurse",
           "budget travel in Japan", "unboxing the newest phone"]
times = []
for q in queries * 2:
    t = time.perf_counter(); pipeline.prompt(q); times.append(time.perf_counter() - t)
print(json.dumps({"open_and_first_s": round(first, 3),
                  "per_query_ms": round(1000 * statistics.median(times), 1)}))
"""


def bench_pe_query(env, data: str) -> dict:
    """Warm PE prompt construction in one process (cached index, query embedding,
    category choice, reference selection and the prompt text)."""
    env = {**env, "POPCORN_DATA": data}
    proc = subprocess.run(
        [sys.executable, "-c", PE_QUERY_CODE], env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": load()}


def bench_index_and_pe(env, data: str, cache: Path) -> dict:
    """The new path's full first build and first PE answer on an empty embedding cache
    (the ONNX export already in the cache)."""
    shutil.rmtree(cache / "embeddings", ignore_errors=True)
    env = {**env, "POPCORN_DATA": data}
    wall, cpu, err = run([*popcorn(), "corpus", "index"], env)
    build = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load": load()}
    m = re.search(r"embedding (\d+) corpus texts .*?\((\d+) reused", err)
    if m:
        build["embedded"], build["reused"] = int(m.group(1)), int(m.group(2))
    shutil.rmtree(cache / "embeddings", ignore_errors=True)
    wall, cpu, _ = run([*popcorn(), "prompt", QUERY, "--mode", "pe"], env)
    first_pe = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load": load()}
    warm_pe = timed([*popcorn(), "prompt", QUERY, "--mode", "pe"], env)
    return {
        "index_build": build,
        "first_pe": first_pe,
        "warm_pe_process": warm_pe,
        "pe_query_in_process": bench_pe_query(env, data),
    }


CLIP_CODE = """
import json, statistics, tempfile, time
from pathlib import Path
from llmpopcorn.backends.base import VideoRequest
from llmpopcorn.backends.video.draft import DraftClip
from llmpopcorn.backends.media import probe_mp4, write_mp4
import av  # imported outside the timing, as in a pipeline run
req = VideoRequest(prompt="waves on a sunny beach", title="A corgi learns to surf", seed=5)
out = Path(tempfile.mkdtemp())
walls, cpus, sizes = [], [], []
for i in range(5):
    t, c = time.perf_counter(), time.process_time()
    write_mp4(DraftClip().generate(req), out / f"{i}.mp4")
    walls.append(time.perf_counter() - t); cpus.append(time.process_time() - c)
    sizes.append((out / f"{i}.mp4").stat().st_size)
same = len({(out / f"{i}.mp4").read_bytes() for i in range(5)}) == 1
info = probe_mp4(out / "0.mp4")  # what was timed is the shipped clip: size, fps, frames
print(json.dumps({"wall_s": round(statistics.median(walls), 3), "cpu_s":
    round(statistics.median(cpus), 3), "bytes": sizes[0], "deterministic": same,
    "clip": f"{info['width']}x{info['height']} {info['fps']:g} fps {info['frames']} frames"}))
"""


def bench_clip(env) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CLIP_CODE], env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": load()}


INDEX_CODE = """
import json, resource, statistics, sys, time
import numpy as np
from llmpopcorn.corpus.vectors import ExactIndex, IVFIndex
path, kind = sys.argv[1], sys.argv[2]
vectors = np.load(path, mmap_mode="r")
n = len(vectors)
rng = np.random.default_rng(1)
# queries near corpus rows (a new video resembles existing ones), not corpus rows
near = np.asarray(vectors[np.sort(rng.choice(n, size=30, replace=False))])
queries = near + 0.5 * rng.normal(size=near.shape).astype(np.float32) / np.sqrt(near.shape[1])
queries /= np.linalg.norm(queries, axis=1, keepdims=True)
pool = np.sort(rng.choice(n, size=n // 8, replace=False))  # a category-sized filter
saved = path + ".ivf.faiss"
t = time.perf_counter()
index = ExactIndex(vectors) if kind == "exact" else IVFIndex(vectors, path=saved)
build = time.perf_counter() - t
reopen = None
if kind != "exact":  # a later process loads the kept index instead of clustering again
    t = time.perf_counter()
    index = IVFIndex(vectors, path=saved)
    reopen = round(time.perf_counter() - t, 2)
index.search(queries[0], 50)  # warm: pages in
def lat(fn):
    times = []
    for q in queries:
        t = time.perf_counter(); fn(q); times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 2)
out = {"build_s": round(build, 2), "reopen_s": reopen,
       "query_ms": lat(lambda q: index.search(q, 50)),
       "pool_query_ms": lat(lambda q: index.search(q, 50, rows=pool))}
if kind != "exact":
    exact = ExactIndex(vectors)
    hits = [len(set(index.search(q, 50)[0]) & set(exact.search(q, 50)[0])) / 50
            for q in queries[:10]]
    out["recall_at_50"] = round(float(np.mean(hits)), 3)
    out["nlist"], out["nprobe"] = index.nlist, index.nprobe
out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(out))
"""


def bench_index1m(env, rows: int, dim: int, work: Path, clustered: bool = False) -> dict:
    """Uniform random unit vectors have no neighbourhoods (every row is about as far
    from a query as any other), the worst case for an approximate index's recall;
    ``clustered`` draws them around 2,000 centres instead, as embeddings are."""
    import numpy as np

    kind = "clustered" if clustered else "random"
    path = work / f"vectors-{kind}-{rows}x{dim}.npy"
    if not path.exists():
        t = time.perf_counter()
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(2000, dim)).astype(np.float32)
        for start in range(0, rows, 100_000):
            part = rng.normal(size=(min(100_000, rows - start), dim)).astype(np.float32)
            if clustered:
                part = centres[rng.integers(0, len(centres), len(part))] + 0.6 * part
            out[start : start + len(part)] = part / np.linalg.norm(part, axis=1, keepdims=True)
        out.flush()
        del out
        made = round(time.perf_counter() - t, 1)
    else:
        made = 0.0
    result = {"rows": rows, "dim": dim, "kind": kind, "generate_s": made, "load": load()}
    for index_kind in ("exact", "ivf"):
        proc = subprocess.run(
            [sys.executable, "-c", INDEX_CODE, str(path), index_kind],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            result[index_kind] = {"error": proc.stderr[-1500:]}
        else:
            result[index_kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- main ------------------------------------------------------------------------------


def table(report: dict) -> str:
    """The README table (markdown)."""
    r = report
    lines = [
        "| measure | target | torch (today's path) | ONNX (new default) |",
        "|---|---|---|---|",
    ]

    def cell(x, key="wall_s", unit="s"):
        if not x or key not in x:
            return "—"
        cpu = f" ({x['cpu_s']:g} CPU-s)" if key == "wall_s" and "cpu_s" in x else ""
        return f"{x[key]:g} {unit}{cpu}"

    make, score, rate = r.get("make", {}), r.get("score", {}), r.get("rate", {})
    lines.append(
        f"| cold `popcorn make` (draft, scored), wall | < 3 s | {cell(make.get('torch'))} "
        f"| {cell(make.get('onnx'))} |"
    )
    lines.append(
        f"| warm score (one idea, one process), median | < 20 ms "
        f"| {cell(score.get('torch'), 'median_ms', 'ms')} "
        f"| {cell(score.get('onnx'), 'median_ms', 'ms')} |"
    )
    lines.append(
        f"| corpus embedding rate (same {rate.get('onnx', {}).get('texts', '?')} texts) | — "
        f"| {cell(rate.get('torch'), 'per_s', '/s')} | {cell(rate.get('onnx'), 'per_s', '/s')} |"
    )
    pe = r.get("pe", {})
    if pe:
        b = pe["index_build"]
        lines.append(
            f"| first-run index build, 16,740 rows ({b.get('embedded', '?')} embedded, "
            f"{b.get('reused', '?')} reused) | — | — | {cell(b)} |"
        )
        lines.append(
            f"| first PE answer, empty embedding cache | < 20 s | — | {cell(pe['first_pe'])} |"
        )
        q = pe.get("pe_query_in_process")
        if q:
            lines.append(
                f"| PE prompt per query, warm (one process) | — | — | {q['per_query_ms']} ms |"
            )
    s = r.get("startup", {})
    if s:
        lines.append(
            f"| `popcorn --help` / `popcorn backends` | < 1 s | — | "
            f"{cell(s['help'])} / {cell(s['backends'])} |"
        )
    c = r.get("clip", {})
    if c:
        lines.append(f"| draft clip render + encode (3 s, 540x960) | < 1 s | — | {cell(c)} |")
    i = r.get("index1m", {})
    if i and "ivf" in i and "query_ms" in i.get("ivf", {}):
        lines.append(
            f"| {i['rows']:,}-row retrieval ({i.get('kind', 'random')} unit vectors), warm "
            f"query | < 20 ms | exact {i['exact']['query_ms']} ms | IVF {i['ivf']['query_ms']} ms,"
            f" recall@50 {i['ivf'].get('recall_at_50')}, build {i['ivf']['build_s']} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("POPCORN_DATA"), help="MicroLens data")
    parser.add_argument("--out", default="speed.json")
    parser.add_argument("--cache-dir", default=None, help="Cache (ONNX export) to reuse.")
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS)
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each cold command.")
    parser.add_argument("--sample", type=int, default=1000, help="Texts for the embedding rate.")
    parser.add_argument("--rows", type=int, default=1_000_000, help="Rows of the synthetic index.")
    parser.add_argument(
        "--clustered", action="store_true", help="Synthetic vectors around centres (recall)."
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POPCORN_")}
    env.update(
        POPCORN_CACHE_DIR=str(cache),
        XDG_CACHE_HOME=str(work / "xdg"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    engines = ["onnx"] if "torch" in args.skip else ["torch", "onnx"]
    report: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "uptime_start": subprocess.run(
                ["uptime"], capture_output=True, text=True
            ).stdout.strip(),
        }
    }
    # warm-up: the one-time ONNX export (needs torch) happens here, outside the timings
    wall, _, _ = run(
        [
            sys.executable,
            "-c",
            "from llmpopcorn.corpus.index import get_embedder; "
            "get_embedder('minilm').embed(['warm-up'])",
        ],
        {**env, "POPCORN_MINILM_ENGINE": "onnx"},
    )
    report["onnx_export_or_load_s"] = round(wall, 2)
    if "startup" not in args.skip:
        report["startup"] = bench_startup(env)
        print(json.dumps(report["startup"], indent=1), file=sys.stderr)
    if "make" not in args.skip:
        report["make"] = {e: bench_make(env, e, work / f"runs-{e}", args.repeat) for e in engines}
        print(json.dumps(report["make"]), file=sys.stderr)
    if "score" not in args.skip:
        report["score"] = {e: bench_score(env, e, repeat=args.repeat) for e in engines}
        print(json.dumps(report["score"]), file=sys.stderr)
    if "index" not in args.skip and args.data:
        report["rate"] = {e: bench_rate(env, e, args.data, args.sample) for e in engines}
        print(json.dumps(report["rate"]), file=sys.stderr)
    if "pe" not in args.skip and args.data:
        report["pe"] = bench_index_and_pe(env, args.data, cache)
        print(json.dumps(report["pe"]), file=sys.stderr)
    if "clip" not in args.skip:
        report["clip"] = bench_clip(env)
        print(json.dumps(report["clip"]), file=sys.stderr)
    if "index1m" not in args.skip:
        report["index1m"] = bench_index1m(env, args.rows, 384, work, args.clustered)
        print(json.dumps(report["index1m"]), file=sys.stderr)
    report["machine"]["uptime_end"] = subprocess.run(
        ["uptime"], capture_output=True, text=True
    ).stdout.strip()
    report["table"] = table(report)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(report["table"])
    shutil.rmtree(work / "xdg", ignore_errors=True)
    for path in [*work.glob("vectors-*.npy"), *work.glob("vectors-*.faiss")]:
        path.unlink()


if __name__ == "__main__":
    main()
