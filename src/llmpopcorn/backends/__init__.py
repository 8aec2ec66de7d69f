"""Backends: LLMs, image and video generators, embedders. See :mod:`llmpopcorn.registry`."""
