"""The pipeline: one query in, one recorded run out.

It owns the stages (``core.Pipeline``: plan, ideate, render, score), bounded
re-asking of the LLM (``ideate``), distinct variants (``variants``), the run record
and its HTML report (``report``) and the ready-to-post package (``package``). It may
import ``core``, ``backends``, ``corpus``, ``predict`` and ``enhance``; runs, the
study and the shells (cli, web, mcp) call it.
"""

from typing import Any

__all__ = ["Pipeline"]


def __getattr__(name: str) -> Any:
    # `from llmpopcorn.pipeline import Pipeline` without loading the stages for
    # callers that only need the record or the package.
    if name == "Pipeline":
        from llmpopcorn.pipeline.core import Pipeline

        return Pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
