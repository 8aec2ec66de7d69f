"""Prompt enhancement (PE) and the prompts themselves.

It owns the prompt templates and the basic-mode builder (``prompts``), the paper's
retrieval-augmented chain-of-thought prompt with its reference pool and copy guard
(``pe``), and turning an LLM reply into a validated idea (``parsing``). It may import
``core``, ``backends``, ``corpus`` and ``predict``; the pipeline calls it.
"""
