"""One registry for built-in and plugin backends, keyed by (kind, name).

Built-ins are registered lazily as ``"module:attribute"`` strings so that listing
backends imports only light modules and never torch. Plugins register through the
``llmpopcorn.backends`` entry-point group: an entry point named ``kind.name``
(e.g. ``llm.my-server``) pointing at a backend class.
"""

from __future__ import annotations

import importlib
import os
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
        "pexels": ".stock.pexels:PexelsCover",
        "pixabay": ".stock.pixabay:PixabayCover",
        "openai-image": ".hosted.openai_image:OpenAIImage",
        "fal-flux": ".hosted.fal:FalFlux",
        "fal-sd": ".hosted.fal:FalSD",
    },
    "video": {
        "draft": ".video.draft:DraftClip",
        "pexels": ".stock.pexels:PexelsClip",
        "pixabay": ".stock.pixabay:PixabayClip",
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
#: and refused by name unless the tests enable them (:data:`TEST_BACKENDS_ENV`)
TEST_ONLY = frozenset({("llm", "fake")})
TEST_BACKENDS_ENV = "POPCORN_TEST_BACKENDS"


def test_backends_enabled() -> bool:
    """Whether the test-only backends may be chosen by name (the test suite sets
    ``POPCORN_TEST_BACKENDS=1``; code can always construct them directly)."""
    return os.environ.get(TEST_BACKENDS_ENV) == "1"


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
        if name not in specs or ((kind, name) in TEST_ONLY and not test_backends_enabled()):
            known = ", ".join(self.listed_names(kind)) or "(none)"
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


def backend_table(
    settings: Any = None, *, check: bool = False, timeout: float = 2.0
) -> dict[str, list[dict]]:
    """Every backend a user may choose, by kind: name, description, whether it can run here
    with ``settings`` (``usable``) and, if not, why; ``status`` says how far that was
    checked: ``ready`` (nothing more to check), ``configured`` (a server is set but was
    not contacted), ``unavailable``; with ``check``, a backend that has a server to reach
    is probed (:meth:`~llmpopcorn.backends.base.Backend.probe`, at most ``timeout`` seconds,
    all probes at once) and is ``reachable`` or ``unreachable`` (then not usable). Test-only
    backends are not listed. What `popcorn backends` and the studio show."""
    from concurrent.futures import ThreadPoolExecutor

    table: dict[str, list[dict]] = {}
    probes = []
    for kind in KINDS:
        rows = []
        for name in registry.listed_names(kind):
            row = {"name": name, "description": "", "usable": False, "reason": ""}
            try:
                cls = registry.get(kind, name)
                avail = cls.availability(settings)
                row.update(
                    description=getattr(cls, "description", ""),
                    usable=avail.ok,
                    reason=avail.reason,
                    status=("configured" if avail.server else "ready")
                    if avail.ok
                    else "unavailable",
                )
                if check and avail.ok and avail.server:
                    probes.append((row, cls))
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the rest
                row.update(reason=f"failed to load: {exc}", status="unavailable")
            rows.append(row)
        if rows:
            table[kind] = rows
    if probes:
        with ThreadPoolExecutor(max_workers=min(8, len(probes))) as pool:
            answers = list(pool.map(lambda p: _probe(p[1], settings, timeout), probes))
        for (row, _cls), answer in zip(probes, answers, strict=True):
            if answer is None:  # nothing that can be probed quickly (a remote API)
                row["reason"] = "; ".join(filter(None, [row["reason"], "not probed (remote)"]))
                continue
            reachable, reason = answer
            row.update(
                status="reachable" if reachable else "unreachable",
                usable=reachable,
                reason=reason,
            )
    return table


def _probe(cls: Any, settings: Any, timeout: float) -> tuple[bool, str] | None:
    try:
        result = cls.probe(settings, timeout)
    except Exception as exc:  # noqa: BLE001 - a failed probe is an answer, not a crash
        return False, f"probe failed: {exc}"
    return None if result is None else (result.ok, result.reason)
