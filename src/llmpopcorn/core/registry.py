"""One registry for built-in and plugin backends, keyed by (kind, name).

Built-ins are registered lazily as ``"module:attribute"`` strings so that listing
backends imports only light modules and never torch. Plugins register through the
``llmpopcorn.backends`` entry-point group: an entry point named ``kind.name``
(e.g. ``llm.my-server``) pointing at a backend class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from llmpopcorn.core.errors import ConfigError, UnknownBackendError

KINDS = ("llm", "image", "video", "embedder", "predictor")
ENTRY_POINT_GROUP = "llmpopcorn.backends"

#: tables of further built-ins, read on first use: "module:function" returning
#: kind -> name -> "module:attr" (the diffusers models come from their specs)
SOURCES = (".diffusion.specs:registry_entries",)

# kind -> name -> "module:attr" (relative modules are under llmpopcorn.backends)
BUILTINS: dict[str, dict[str, str]] = {
    "llm": {
        "offline": ".llm.offline:OfflineComposer",
        "fake": ".llm.fake:FakeLLM",
        "openai": ".llm.openai_compat:OpenAICompatLLM",
        "deepseek": ".llm.openai_compat:DeepSeekLLM",
        "ollama": ".llm.openai_compat:OllamaLLM",
        "vllm": ".llm.openai_compat:VLLMLLM",
        "llamacpp": ".llm.openai_compat:LlamaCppLLM",
        "transformers": ".llm.transformers_local:TransformersLLM",
        "local": ".llm.local:LocalLLM",
    },
    "image": {
        "draft": ".image.draft:DraftCover",
        "openai-image": ".hosted.openai_image:OpenAIImage",
        "fal-flux": ".hosted.fal:FalFlux",
        "fal-sd": ".hosted.fal:FalSD",
    },
    "video": {
        "draft": ".video.draft:DraftClip",
        "fal-ltx": ".hosted.fal:FalLTX",
        "fal-wan": ".hosted.fal:FalWan",
        "fal-hunyuan": ".hosted.fal:FalHunyuan",
        "fal-kling": ".hosted.fal:FalKling",
    },
    "embedder": {
        "minilm": ".embed.sentence:SentenceEmbedder",
        "minilm-torch": ".embed.sentence:TorchMiniLMEmbedder",
        "minilm-l12": ".embed.sentence:MiniLML12Embedder",
        "tfidf": ".embed.tfidf:TfidfEmbedder",
    },
    # scorer implementations; "default" reads a trained model folder (--predictor NAME or
    # DIR picks the folder; a plugin registered here under another name replaces the scorer)
    "predictor": {
        "default": "llmpopcorn.predict.scorer:PopularityScorer",
    },
}


#: backends that exist for the tests (a scripted LLM): registered, never offered to users
TEST_ONLY = frozenset({("llm", "fake")})


class Registry:
    def __init__(self, builtins: dict[str, dict[str, str]] | None = None):
        self._specs: dict[str, dict[str, str | type]] = {
            kind: dict(names) for kind, names in (builtins or BUILTINS).items()
        }
        self._sources = builtins is None  # a registry built from a given table: only it
        self._plugins_loaded = False

    def register(self, kind: str, name: str) -> Callable[[type], type]:
        """Class decorator: ``@registry.register("llm", "mine")``."""

        def deco(cls: type) -> type:
            self.add(kind, name, cls)
            return cls

        return deco

    def add(self, kind: str, name: str, target: str | type) -> None:
        if kind not in KINDS:
            raise ConfigError(f"unknown backend kind '{kind}'", f"use one of: {', '.join(KINDS)}")
        self._specs.setdefault(kind, {})[name] = target

    def remove(self, kind: str, name: str) -> None:
        self._specs.get(kind, {}).pop(name, None)

    def names(self, kind: str) -> list[str]:
        self._load_plugins()
        return sorted(self._specs.get(kind, {}))

    def listed_names(self, kind: str) -> list[str]:
        """The names a user may choose (help texts, `popcorn backends`, the studio's
        lists): every name but the test-only ones (:data:`TEST_ONLY`)."""
        return [n for n in self.names(kind) if (kind, n) not in TEST_ONLY]

    def get(self, kind: str, name: str) -> type:
        """The backend class for ``(kind, name)``; unknown names list the known ones."""
        self._load_plugins()
        specs = self._specs.get(kind)
        if specs is None:
            raise ConfigError(f"unknown backend kind '{kind}'", f"use one of: {', '.join(KINDS)}")
        if name not in specs:
            known = ", ".join(sorted(specs)) or "(none)"
            raise UnknownBackendError(
                f"unknown {kind} backend '{name}'",
                f"available {kind} backends: {known} (run `popcorn backends`)",
            )
        target = specs[name]
        if isinstance(target, str):
            target = _import(target)
            specs[name] = target
        return target

    def create(self, kind: str, name: str, settings: Any) -> Any:
        """Instantiate a backend from the run settings."""
        cls = self.get(kind, name)
        factory = getattr(cls, "from_settings", None)
        return factory(settings) if factory else cls()

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        if self._sources:
            for source in SOURCES:
                for kind, names in _import(source)().items():
                    for name, target in names.items():
                        self._specs.setdefault(kind, {}).setdefault(name, target)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            kind, _, name = ep.name.partition(".")
            if kind in KINDS and name:
                self._specs.setdefault(kind, {}).setdefault(name, ep.value)


def _import(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if module_name.startswith("."):
        module = importlib.import_module(module_name, "llmpopcorn.backends")
    else:
        module = importlib.import_module(module_name)
    return getattr(module, attr)


registry = Registry()


def backend_table(settings: Any = None) -> dict[str, list[dict]]:
    """Every registered backend by kind: name, description, whether it can run here
    with ``settings`` and, if not, why (what `popcorn backends` and the web app show)."""
    table: dict[str, list[dict]] = {}
    for kind in KINDS:
        rows = []
        for name in registry.names(kind):
            try:
                cls = registry.get(kind, name)
                avail = cls.availability(settings)
                rows.append(
                    {
                        "name": name,
                        "description": getattr(cls, "description", ""),
                        "usable": avail.ok,
                        "reason": avail.reason,
                    }
                )
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the rest
                rows.append(
                    {
                        "name": name,
                        "description": "",
                        "usable": False,
                        "reason": f"failed to load: {exc}",
                    }
                )
        if rows:
            table[kind] = rows
    return table
