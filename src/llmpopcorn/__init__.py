"""LLMPopcorn: LLMs as assistants for popular micro-video generation.

The public entry point is :class:`llmpopcorn.pipeline.core.Pipeline`; the ``popcorn``
command and the web UI are thin shells over it. Importing this package is cheap:
heavy libraries (torch, diffusers, transformers) load only when a backend needs them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmpopcorn")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

#: the subpackages, lowest layer first: core (types, settings, registry, errors), the
#: backends (LLMs, embedders, renderers), the corpus and retrieval, the predictor, prompt
#: enhancement, the pipeline (stages, report, package), runs (store, driver, executors,
#: batches), the study, and the shells (web studio, MCP server, CLI)
LAYERS = (
    "core",
    "backends",
    "corpus",
    "predict",
    "enhance",
    "pipeline",
    "runs",
    "study",
    "web",
    "mcp",
    "cli",
)

__all__ = ["LAYERS", "__version__"]
