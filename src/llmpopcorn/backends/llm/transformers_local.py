"""A local Hugging Face causal LM on transformers: a model folder, a cached hub id or a
GGUF file (the ``transformers`` backend, and the fallback runtime of ``local``).

Weights are loaded only from disk (``local_files_only``); nothing is downloaded. torch
and transformers are imported on first use (``pip install 'llmpopcorn[local]'``).

A model loads once per process, under a lock (several backends, threads or study arms
asking for the same model share it; a concurrent first load once died inside
transformers' GGUF support). Decoding is a plain loop over the model's KV cache, so
that each call samples with its own ``torch.Generator`` seeded from the request (the
caller's and other threads' random state are never touched, and the same seed gives
the same reply whatever runs beside it), the deadline is checked between token steps
(an injectable clock), and, when ``llguidance`` is installed, every token is masked by
the grammar of the request's schema (:mod:`.decoding`). Sampling follows the paper
(temperature 0.7, top_p 0.9); temperature 0 is greedy.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import threading
import time
from pathlib import Path
from typing import Any

from llmpopcorn.backends.base import LLM, Availability
from llmpopcorn.backends.llm.decoding import (
    REASONING_TOKENS,
    REPETITION_PENALTY,
    Clock,
    Deadline,
    chat_messages,
    finish,
    grammar,
    penalise,
)
from llmpopcorn.core.errors import ConfigError, LLMError, require
from llmpopcorn.core.types import ChatRequest, Completion, Message

log = logging.getLogger(__name__)

_LOAD_LOCK = threading.Lock()
_LOADED: dict[tuple, TransformersModel] = {}


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_source(model: str) -> tuple[str, dict[str, Any]]:
    """Where transformers loads ``model`` from, and the keyword arguments that says so."""
    path = Path(model).expanduser()
    kwargs: dict[str, Any] = {"local_files_only": True}
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigError(
                f"{path} is a file but not a .gguf model",
                "pass a model directory (config.json + weights) or a .gguf file",
            )
        require("gguf", "local", "GGUF models")
        kwargs["gguf_file"] = path.name
        return str(path.parent), kwargs
    if path.is_dir():
        return str(path), kwargs
    if path.is_absolute() or model.startswith((".", "~")):
        raise ConfigError(
            f"model path not found: {path}", "pass an existing directory or .gguf file"
        )
    return model, kwargs  # a hub id, which must already be in the local cache


class TransformersModel:
    """One loaded model and tokenizer, shared by every backend that asks for it."""

    runtime = "transformers"

    def __init__(self, model: Any, tokenizer: Any, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        config = model.config
        self.context_length = getattr(config, "max_position_embeddings", None)
        eos = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self._ll_tokenizer: Any = None
        self._cache_kw: str | None = None
        self._keep_kw: str | None = None

    @classmethod
    def load(
        cls,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        load_in_4bit: bool = False,
        adapter: str | None = None,
    ) -> TransformersModel:
        """The model (with ``adapter``, a LoRA folder, merged in), loaded at most once per
        process for the same arguments."""
        key = (model, device, dtype, load_in_4bit, adapter)
        with _LOAD_LOCK:
            if key not in _LOADED:
                _LOADED[key] = cls._load(model, device, dtype, load_in_4bit, adapter)
            return _LOADED[key]

    @classmethod
    def _load(
        cls, name: str, device: str, dtype: str, load_in_4bit: bool, adapter: str | None = None
    ) -> TransformersModel:
        require("torch", "local", "local LLMs")
        transformers = require("transformers", "local", "local LLMs")
        source, kwargs = model_source(name)
        device = resolve_device(device)
        model_kwargs = dict(kwargs)
        if load_in_4bit:
            if not device.startswith("cuda"):
                raise ConfigError(
                    "4-bit loading needs a CUDA GPU", "drop --llm-load-in-4bit on CPU"
                )
            require("bitsandbytes", "gpu", "4-bit models")
            model_kwargs["quantization_config"] = transformers.BitsAndBytesConfig(load_in_4bit=True)
        if dtype != "auto":
            model_kwargs["dtype"] = dtype
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
            model = transformers.AutoModelForCausalLM.from_pretrained(source, **model_kwargs)
        except OSError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise LLMError(
                f"could not load the model '{name}' from local files: {reason}",
                f"download it on a connected machine (huggingface-cli download {name}) "
                "and pass its local path with --llm-model",
            ) from None
        if adapter:  # popcorn tune's LoRA (backends/llm/adapter.py), merged once
            from llmpopcorn.backends.llm.adapter import apply_adapter, check_adapter

            check_adapter(adapter, name if Path(name).expanduser().exists() else None)
            model = apply_adapter(model, adapter)
        if not load_in_4bit:
            model = model.to(device)
        model.eval()
        log.info("loaded %s on %s (adapter: %s)", name, device, adapter)
        return cls(model, tokenizer, name)

    # -- tokens ----------------------------------------------------------------------

    def encode(self, messages: list[Message]) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(
                chat_messages(messages), add_generation_prompt=True, tokenize=True
            )
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
            return [int(t) for t in ids]
        log.warning("%s has no chat template; using a plain role-prefixed prompt", self.name)
        text = "".join(f"{m.role.capitalize()}: {m.content}\n" for m in messages)
        return [int(t) for t in tok(text + "Assistant:")["input_ids"]]

    def _matcher(self, request: ChatRequest, reasoning_tokens: int) -> Any:
        """llguidance's matcher for the request's schema; None without a schema or
        without the package (the reply is then parsed)."""
        if not request.response_schema:
            return None
        try:
            import llguidance
            import llguidance.hf
        except ImportError:
            return None
        if self._ll_tokenizer is None:
            vocab = self.model.get_output_embeddings().weight.shape[0]
            try:
                self._ll_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=vocab)
            except ValueError as exc:  # a tokenizer llguidance cannot read (no decoder)
                log.warning("%s: replies are parsed, not constrained (%s)", self.name, exc)
                self._ll_tokenizer = False
        if self._ll_tokenizer is False:
            return None
        kind, text = grammar(request, reasoning_tokens)
        spec = (
            llguidance.LLMatcher.grammar_from_json_schema(text)
            if kind == "json_schema"
            else llguidance.LLMatcher.grammar_from_lark(text)
        )
        return llguidance.LLMatcher(self._ll_tokenizer, spec)

    # -- decoding --------------------------------------------------------------------

    def generate(
        self,
        request: ChatRequest,
        *,
        deadline: Deadline,
        reasoning_tokens: int = REASONING_TOKENS,
        repetition_penalty: float = REPETITION_PENALTY,
    ) -> Completion:
        import torch

        ids = self.encode(request.messages)
        room = request.max_tokens
        if self.context_length:
            room = min(room, self.context_length - len(ids))
        max_tokens = max(1, room)
        matcher = self._matcher(request, reasoning_tokens)
        device = self.model.device
        generator = torch.Generator(device="cpu")
        generator.manual_seed(request.seed if request.seed is not None else 0)
        tokens: list[int] = []
        timed_out = stopped = False
        with torch.inference_mode():
            logits, cache = self._step(torch.tensor([ids], device=device), None)
            while len(tokens) < max_tokens:
                if deadline.passed():
                    timed_out = True
                    break
                logits = logits.float().cpu()
                penalise(logits.numpy(), tokens, repetition_penalty)
                if matcher is not None:
                    if matcher.is_stopped():
                        stopped = True
                        break
                    logits = _masked(logits, matcher)
                token = _pick(logits, request, generator)
                tokens.append(token)
                if token in self.eos:
                    break
                if matcher is not None:
                    matcher.consume_token(token)
                logits, cache = self._step(torch.tensor([[token]], device=device), cache)
        text = self.tokenizer.decode(
            [t for t in tokens if t not in self.eos], skip_special_tokens=True
        )
        return Completion(
            text=text,
            finish_reason=finish(tokens, self.eos, max_tokens, timed_out, stopped),
            prompt_tokens=len(ids),
            completion_tokens=len(tokens),
            method="schema" if matcher is not None else "parse",
        )

    def _step(self, input_ids: Any, cache: Any) -> tuple[Any, Any]:
        """One forward pass: the last position's logits and the KV cache (transformers 5
        calls it ``cache``, 4.x ``past_key_values``); the prompt's other positions get no
        logits (2,300 prompt tokens x 49,152 would be 450 MB)."""
        if self._cache_kw is None:
            params = inspect.signature(self.model.forward).parameters
            self._cache_kw = "cache" if "cache" in params else "past_key_values"
            self._keep_kw = "logits_to_keep" if "logits_to_keep" in params else None
        kwargs: dict[str, Any] = {self._cache_kw: cache, "use_cache": True}
        if self._keep_kw:
            kwargs[self._keep_kw] = 1
        out = self.model(input_ids=input_ids, **kwargs)
        return out.logits[0, -1], getattr(out, self._cache_kw)


def _masked(logits: Any, matcher: Any) -> Any:
    import llguidance.torch as llt

    bitmask = llt.allocate_token_bitmask(1, logits.shape[0])
    llt.fill_next_token_bitmask(matcher, bitmask, 0)
    masked = logits.unsqueeze(0).clone()
    llt.apply_token_bitmask_inplace(masked, bitmask)
    return masked[0]


def _pick(logits: Any, request: ChatRequest, generator: Any) -> int:
    """Greedy at temperature 0, else temperature then nucleus (top_p) sampling."""
    import torch

    if request.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / request.temperature, dim=-1)
    if request.top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        outside = ordered.cumsum(0) - ordered >= request.top_p  # the first always stays
        ordered[outside] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator))


class TransformersLLM(LLM):
    name = "transformers"
    holds_device = True
    description = "a local Hugging Face model directory or .gguf file (--llm-model PATH)"

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        load_in_4bit: bool = False,
        dtype: str = "auto",
        deadline: float = 120.0,
        reasoning_tokens: int = REASONING_TOKENS,
        repetition_penalty: float = REPETITION_PENALTY,
        clock: Clock = time.monotonic,
        adapter: str | Path | None = None,
    ):
        if not model:
            raise ConfigError(
                "the transformers LLM backend needs a model",
                "pass --llm-model PATH (a local model directory, a .gguf file, or a hub id "
                "already in the local Hugging Face cache)",
            )
        self.model_name = model
        self.device = device
        self.load_in_4bit = load_in_4bit
        self.dtype = dtype
        self.deadline = deadline
        self.reasoning_tokens = reasoning_tokens
        self.repetition_penalty = repetition_penalty
        self.clock = clock
        self.adapter = str(adapter) if adapter else None

    @classmethod
    def from_settings(cls, settings) -> TransformersLLM:
        return cls(
            settings.llm_model or "",
            device=settings.device,
            load_in_4bit=settings.llm_load_in_4bit,
            deadline=settings.llm_deadline,
            adapter=settings.llm_adapter,
        )

    @classmethod
    def availability(cls, settings=None) -> Availability:
        avail = Availability.needs_modules("local", "torch", "transformers")
        if not avail.ok:
            return avail
        if settings is not None and settings.llm == cls.name and settings.llm_model:
            return Availability(True)
        # no model configured: choosing it could only fail
        return Availability(False, "no model configured: --llm-model PATH (local weights)")

    def model_id(self) -> str:
        from llmpopcorn.backends.llm.adapter import adapter_model_id

        return adapter_model_id(self.model_name, self.adapter)

    def options(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter,
            "runtime": "transformers",
            "device": self.device,
            "load_in_4bit": self.load_in_4bit,
            "dtype": self.dtype,
            "deadline": self.deadline,
            "repetition_penalty": self.repetition_penalty,
            "constrained": self.constrained,
        }

    @property
    def constrained(self) -> bool:
        """Whether replies are held to the request's schema (needs llguidance)."""
        return importlib.util.find_spec("llguidance") is not None

    def loaded(self) -> TransformersModel:
        return TransformersModel.load(
            self.model_name,
            device=self.device,
            dtype=self.dtype,
            load_in_4bit=self.load_in_4bit,
            adapter=self.adapter,
        )

    def complete(self, request: ChatRequest) -> Completion:
        model = self.loaded()
        return model.generate(
            request,
            deadline=Deadline(self.deadline, self.clock),
            reasoning_tokens=self.reasoning_tokens,
            repetition_penalty=self.repetition_penalty,
        )

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.loaded().encode(messages))

    def context_window(self) -> int | None:
        return self.loaded().context_length
