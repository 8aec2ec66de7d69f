"""The core: what every other part of LLMPopcorn shares, and nothing more.

It owns the typed data passed between stages (``types``), the one settings object
(``settings``), the registry of every pluggable name (``registry``), the error types
with their hints (``errors``), run folders and file names (``paths``), secret
scrubbing (``redact``), signal handling (``signals``) and the title copy check
(``copycheck``). It imports nothing else from the package: every other subpackage
may import it.
"""
