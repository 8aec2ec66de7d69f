"""Diffusers image and video backends (the ``[gpu]`` extra).

Light at import: torch and diffusers are imported when a backend loads its pipeline.
Per-model facts are data in :mod:`.specs`; the behaviour is shared in :mod:`.base`.
"""
