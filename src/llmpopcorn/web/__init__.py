"""A small local web UI over the same :class:`~llmpopcorn.pipeline.core.Pipeline`.

``popcorn serve`` starts it on 127.0.0.1 (``pip install 'llmpopcorn[web]'``).
"""
