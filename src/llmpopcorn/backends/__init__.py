"""Backends: LLMs, image and video generators, embedders. See :mod:`llmpopcorn.core.registry`."""
