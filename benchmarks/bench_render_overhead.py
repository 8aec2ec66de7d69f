"""Wrapper overhead of the diffusers backends against calling the same pipeline directly.

For each backend, a tiny randomly initialised pipeline (tests/diffusion_fixtures.py,
no download) is called the same number of times two ways, interleaved, in the same
process, with the same seed, steps and arguments:

- direct:  ``pipe(**kwargs, generator=torch.Generator().manual_seed(seed))`` and the
  float -> uint8 conversion any caller needs;
- wrapper: ``backend.generate(request)`` (seeding, step timing callback, memory
  accounting, conversion, the 9:16 and 3.0 s policy; the direct path applies the
  same policy, so both give the same pixels).

It prints the median seconds of each and their ratio (target: wrapper/direct <= 1.05).

    python benchmarks/bench_render_overhead.py                 # all backends, 5 repeats
    python benchmarks/bench_render_overhead.py --backends sd15 ltx --repeats 9 --json out.json

With ``--paper`` on a GPU machine, it instead renders one clip per backend at the
paper's settings from locally present weights (missing weights are reported, not
fetched) and prints seconds per clip, seconds per step and peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

ALL = ("sd15", "sdxl", "flux", "ltx", "hunyuan", "cogvideox", "animatediff", "wan")
IMAGES = ("sd15", "sdxl", "flux")


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def overhead(names: list[str], repeats: int, steps: int) -> list[dict]:
    import numpy as np
    import torch
    from PIL import Image

    import diffusion_fixtures as fx
    from llmpopcorn.backends.base import ImageRequest, VideoRequest
    from llmpopcorn.backends.diffusion import policy
    from llmpopcorn.backends.diffusion.base import to_cover, to_uint8
    from llmpopcorn.backends.diffusion.options import resolve_options

    rows = []
    root = Path(tempfile.mkdtemp(prefix="bench-tiny-"))
    for name in names:
        kind = "image" if name in IMAGES else "video"
        cls = fx.tiny_class(name)  # the mimic of the real model, at its default preset
        raw = fx.tiny_options(name, fx.save(name, root), steps=steps)
        backend = cls.prepare(resolve_options(cls.spec, raw, device="cpu"))
        make = ImageRequest if kind == "image" else VideoRequest
        request = make(prompt="a corgi learns to surf", seed=7)
        pipe = backend.pipe  # loaded once, shared by both ways
        kwargs = backend.request_kwargs(request)  # the same arguments the wrapper passes

        def direct(pipe=pipe, kwargs=kwargs, kind=kind, opts=backend.opts) -> np.ndarray:
            out = pipe(**kwargs, generator=torch.Generator().manual_seed(7))
            if kind == "image":
                return np.asarray(to_cover(Image.fromarray(to_uint8(out.images[0]))))
            # the same 9:16 / 3.0 s policy any caller needs
            frames = [policy.fit_frame(f[..., :3], opts.fit) for f in to_uint8(out.frames[0])]
            return np.stack(policy.fit_duration(frames, opts.fps, opts.duration)[0])

        def wrapped(backend=backend, request=request, kind=kind) -> np.ndarray:
            out = backend.generate(request)
            return np.asarray(out) if kind == "image" else np.stack(out.frames)

        # warm-up both paths; same seed, same pixels: the wrapper adds bookkeeping only
        same = bool(np.array_equal(direct(), wrapped()))
        times: dict[str, list[tuple[float, float]]] = {"direct": [], "wrapper": []}
        for i in range(repeats):
            order = [("direct", direct), ("wrapper", wrapped)]
            for label, fn in order if i % 2 == 0 else order[::-1]:
                times[label].append(_timed(fn))
        med = {
            label: [statistics.median(t[k] for t in pairs) for k in (0, 1)]
            for label, pairs in times.items()
        }
        (dw, dc), (ww, wc) = med["direct"], med["wrapper"]
        row = {
            "backend": name,
            "steps": steps,
            "repeats": repeats,
            "direct_wall_s": round(dw, 4),
            "wrapper_wall_s": round(ww, 4),
            "ratio_wall": round(ww / dw, 4),
            "direct_cpu_s": round(dc, 4),
            "wrapper_cpu_s": round(wc, 4),
            "ratio_cpu": round(wc / dc, 4),
            "same_pixels": same,
        }
        rows.append(row)
        print(
            f"{name:<12} wall: direct {dw:7.3f} s wrapper {ww:7.3f} s ratio {ww / dw:5.3f} | "
            f"cpu: direct {dc:7.3f} s wrapper {wc:7.3f} s ratio {wc / dc:5.3f} | "
            f"same pixels: {same}",
            flush=True,
        )
    return rows


def paper(names: list[str]) -> list[dict]:
    """One render per backend at the paper's settings (GPU, local weights only)."""
    from llmpopcorn.backends.base import ImageRequest, VideoRequest
    from llmpopcorn.core.errors import PopcornError
    from llmpopcorn.core.registry import registry
    from llmpopcorn.core.settings import Settings

    rows = []
    for name in names:
        kind = "image" if name in IMAGES else "video"
        settings = Settings.resolve(
            env={}, device="cuda", **{kind: name, f"{kind}_options": {"preset": "paper"}}
        )
        try:
            backend = registry.create(kind, name, settings)
            started = time.perf_counter()
            if kind == "image":
                backend.generate(ImageRequest(prompt="a corgi learns to surf", seed=42))
            else:
                backend.generate(VideoRequest(prompt="a corgi learns to surf", seed=42))
            total = time.perf_counter() - started
            row = {"backend": name, "seconds": round(total, 2), **backend.options()}
            del backend  # free the GPU before the next model
        except PopcornError as exc:
            row = {"backend": name, "error": str(exc)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(ALL), choices=ALL)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--paper", action="store_true", help="GPU: paper settings, real weights")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: tiny ops, stable timings)"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.paper:
        rows = paper(args.backends)
    else:
        rows = overhead(args.backends, args.repeats, args.steps)
        for key in ("ratio_wall", "ratio_cpu"):
            ratios = [r[key] for r in rows]
            print(f"{key}: median {statistics.median(ratios):.3f}, max {max(ratios):.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
