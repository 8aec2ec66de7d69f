"""Runs at scale: the run store, the driver, the executors and batches.

It owns the one durable run store (SQLite, leased claims; ``store``), the driver loop
that claims work and runs its stages (``driver``), the local and Ray executors
(``executors``) and ``popcorn batch`` (``batch``). It may import ``core`` and the
``pipeline`` (and what the pipeline builds on); the study and the shells call it.
"""
