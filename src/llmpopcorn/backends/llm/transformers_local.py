"""A local Hugging Face causal LM: a model directory, a cached hub id or a GGUF file.

Weights are loaded only from disk (``local_files_only``); nothing is downloaded.
torch and transformers are imported on first use (``pip install 'llmpopcorn[local]'``).
Sampling follows the paper (temperature 0.7, top_p 0.9) and is seeded per call
without touching the caller's global RNG state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from llmpopcorn.backends.base import LLM, Availability
from llmpopcorn.core.errors import ConfigError, LLMError, require
from llmpopcorn.core.types import ChatRequest

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TransformersLLM(LLM):
    name = "transformers"
    description = "a local Hugging Face model directory or .gguf file (--llm-model PATH)"

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        load_in_4bit: bool = False,
        dtype: str = "auto",
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
        self._model: Any = None
        self._tokenizer: Any = None

    @classmethod
    def from_settings(cls, settings) -> TransformersLLM:
        return cls(
            settings.llm_model or "", device=settings.device, load_in_4bit=settings.llm_load_in_4bit
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
        return self.model_name

    def options(self) -> dict[str, Any]:
        return {"device": self.device, "load_in_4bit": self.load_in_4bit, "dtype": self.dtype}

    # -- loading ---------------------------------------------------------------------

    def _load(self) -> None:
        if self._model is not None:
            return
        require("torch", "local", "local LLMs")
        transformers = require("transformers", "local", "local LLMs")
        path = Path(self.model_name).expanduser()
        kwargs: dict[str, Any] = {"local_files_only": True}
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ConfigError(
                    f"{path} is a file but not a .gguf model",
                    "pass a model directory (config.json + weights) or a .gguf file",
                )
            require("gguf", "local", "GGUF models")
            source, kwargs["gguf_file"] = str(path.parent), path.name
        elif path.is_dir():
            source = str(path)
        elif path.is_absolute() or self.model_name.startswith((".", "~")):
            raise ConfigError(
                f"model path not found: {path}", "pass an existing directory or .gguf file"
            )
        else:
            source = self.model_name  # a hub id, which must already be in the local cache
        device = resolve_device(self.device)
        model_kwargs = dict(kwargs)
        if self.load_in_4bit:
            if not device.startswith("cuda"):
                raise ConfigError(
                    "4-bit loading needs a CUDA GPU", "drop --llm-load-in-4bit on CPU"
                )
            require("bitsandbytes", "gpu", "4-bit models")
            model_kwargs["quantization_config"] = transformers.BitsAndBytesConfig(load_in_4bit=True)
        if self.dtype != "auto":
            model_kwargs["dtype"] = self.dtype
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
            model = transformers.AutoModelForCausalLM.from_pretrained(source, **model_kwargs)
        except OSError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise LLMError(
                f"could not load the model '{self.model_name}' from local files: {reason}",
                f"download it on a connected machine (huggingface-cli download {self.model_name}) "
                "and pass its local path with --llm-model",
            ) from None
        if not self.load_in_4bit:
            model = model.to(device)
        model.eval()
        self._model, self._tokenizer = model, tokenizer
        log.info("loaded %s on %s", self.model_name, device)

    def _encode(self, request: ChatRequest):
        tok = self._tokenizer
        messages = [m.model_dump() for m in request.messages]
        if getattr(tok, "chat_template", None):
            encoded = tok.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        else:
            log.warning(
                "%s has no chat template; using a plain role-prefixed prompt", self.model_name
            )
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)
            encoded = tok(text + "Assistant:", return_tensors="pt")
        return {k: v.to(self._model.device) for k, v in encoded.items()}

    def complete(self, request: ChatRequest) -> str:
        import torch

        self._load()
        inputs = self._encode(request)
        do_sample = request.temperature > 0
        gen_kwargs: dict[str, Any] = {"max_new_tokens": request.max_tokens, "do_sample": do_sample}
        if do_sample:
            gen_kwargs.update(temperature=request.temperature, top_p=request.top_p)
        pad = self._tokenizer.pad_token_id
        if pad is None:
            pad = self._tokenizer.eos_token_id
        gen_kwargs["pad_token_id"] = pad
        devices = [self._model.device] if self._model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            if request.seed is not None:
                torch.manual_seed(request.seed)
            output = self._model.generate(**inputs, **gen_kwargs)
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return self._tokenizer.decode(new_tokens, skip_special_tokens=True)
