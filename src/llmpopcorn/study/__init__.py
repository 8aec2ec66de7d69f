"""The paper's study (``popcorn bench``).

It owns the study's cells and arms on the shared driver (``bench``), its statistics
(``stats``), its tables and plots (``report``) and the human baseline of real
MicroLens videos (``baseline``). It may import everything below it (``runs``,
``pipeline`` and their foundations); only the shells call it.
"""
