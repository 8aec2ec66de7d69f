"""A local model converted once for ONNX Runtime GenAI, cached by the source's hash.

A GGUF file (quantised ones too, such as SmolLM2's Q4_1: the model builder itself takes
only fp16/fp32 GGUF) is first dequantised through transformers' GGUF loader: a plain
model of the same class, built from the config without its ``quantization_config``,
takes the loaded state dict and saves as safetensors (``save_pretrained`` on the
GGUF-loaded model itself refuses). A Hugging Face folder goes to the builder as it is.
onnxruntime-genai's model builder then writes an int4 CPU model with
``int4_accuracy_level=4`` (int8 compute: prefill 188 against 135 tokens/s for the
default level on 2 loaded cores, same generation speed).

Both steps run in a child process (torch and transformers stay out of this one, which
then loads the result in under a second; the builder prints a great deal): its output
goes to ``build.log`` beside the result. The result lives in
``<cache>/llm/<name>-<sha256[:16]>-int4-cpu/``, built under a file lock (a second
process waits and reuses it) in a temporary folder renamed when complete, with
``popcorn.json`` saying what it was built from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmpopcorn.core.cache import file_lock
from llmpopcorn.core.errors import LLMError
from llmpopcorn.core.progress import Progress

log = logging.getLogger(__name__)

PRECISION = "int4"
BUILDER_OPTIONS = ("int4_accuracy_level=4",)
STAMP = "popcorn.json"
#: files of a Hugging Face folder whose content is hashed (weights: name, size, mtime)
_SMALL = 16 * 2**20

_digests: dict[tuple, str] = {}


def source_digest(source: Path) -> str:
    """SHA-256 of a model file, or of a folder's small files' content and its large files'
    names, sizes and times (hashing gigabytes of weights on every load would cost more
    than the load). Remembered per path, size and time in this process."""
    stat = source.stat()
    key = (str(source.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _digests:
        return _digests[key]
    digest = hashlib.sha256()
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        info = path.stat()
        digest.update(str(path.relative_to(source) if path != source else path.name).encode())
        if source.is_file() or info.st_size <= _SMALL:
            with open(path, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(2**20), b""):
                    digest.update(block)
        else:
            digest.update(f"{info.st_size}:{info.st_mtime_ns}".encode())
    _digests[key] = digest.hexdigest()
    return _digests[key]


def model_name(source: Path) -> str:
    name = source.name.removesuffix(".gguf") if source.is_file() else source.name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "model"


def converted_dir(source: Path, cache_dir: Path) -> Path:
    return cache_dir / "llm" / f"{model_name(source)}-{source_digest(source)[:16]}-{PRECISION}-cpu"


def ensure_onnx(source: Path, cache_dir: Path, *, show: bool | None = None) -> Path:
    """The converted model for ``source`` (built once, with a progress line)."""
    target = converted_dir(source, cache_dir)
    if (target / STAMP).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock", f"the ONNX model of {source.name}"):
        if (target / STAMP).exists():  # another process built it while this one waited
            return target
        _build(source, target, show)
    return target


def _build(source: Path, target: Path, show: bool | None) -> None:
    steps = 2 if source.is_file() else 1
    bar = Progress(
        steps, f"converting {source.name} for onnxruntime-genai (once)", show=show, noun="steps"
    )
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    log_path = work / "build.log"
    try:
        hf_dir = source
        if source.is_file():
            hf_dir = work / "hf"
            _child(
                [sys.executable, "-m", __name__, "dequantize", str(source), str(hf_dir)], log_path
            )
            bar.advance(1)
        out = work / "onnx"
        _child(
            [
                sys.executable, "-m", "onnxruntime_genai.models.builder",
                "-i", str(hf_dir), "-o", str(out), "-p", PRECISION, "-e", "cpu",
                "-c", str(work / "builder-cache"), "--extra_options", *BUILDER_OPTIONS,
            ],
            log_path,
        )  # fmt: skip
        bar.advance(1)
        shutil.move(log_path, out / "build.log")
        stamp = {
            "source": str(source),
            "sha256": source_digest(source),
            "precision": PRECISION,
            "builder_options": list(BUILDER_OPTIONS),
            "seconds": round(time.perf_counter() - started, 1),
        }
        (out / STAMP).write_text(json.dumps(stamp, indent=2), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)  # an unfinished earlier attempt
        os.replace(out, target)
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    log.info("converted %s in %.1f s: %s", source, time.perf_counter() - started, target)


def _child(command: list[str], log_path: Path) -> None:
    with open(log_path, "ab") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)  # noqa: S603
    if done.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise LLMError(
            f"converting the model for onnxruntime-genai failed ({command[2]}): "
            + " | ".join(tail),
            "check that the model is a causal LM the builder supports, or use "
            "--llm-runtime transformers",
        )


def dequantize(gguf: Path, out: Path) -> None:
    """A GGUF file as a Hugging Face folder of float32 safetensors (in the child)."""
    import torch
    import transformers

    folder, name = str(gguf.parent), gguf.name
    kwargs = {"gguf_file": name, "local_files_only": True}
    config = transformers.AutoConfig.from_pretrained(folder, **kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **kwargs)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, **kwargs
    )
    fields = {k: v for k, v in config.to_dict().items() if k != "quantization_config"}
    plain = type(loaded)(type(config).from_dict(fields))
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":  # the child process of ensure_onnx
    if len(sys.argv) != 4 or sys.argv[1] != "dequantize":
        sys.exit("usage: python -m llmpopcorn.backends.llm.local_build dequantize GGUF OUT")
    dequantize(Path(sys.argv[2]), Path(sys.argv[3]))
