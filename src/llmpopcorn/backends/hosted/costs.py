"""Cost estimates and caps for hosted generators (no network call anywhere here).

Each model has a published :class:`Price`; ``--max-cost`` (``max_cost``) caps one run and
is checked when the backends are created, before the LLM or any provider is called, and
again before each call; ``max_batch_cost`` caps what all hosted calls of a batch spend
(:class:`CostLedger`, scoped by :func:`batch_budget`; a CLI process is one batch);
:func:`check_batch_cost` refuses a batch up front from its size.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from llmpopcorn.backends.hosted.errors import CostLimitError
from llmpopcorn.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from llmpopcorn.core.settings import Settings

PriceUnit = Literal["image", "megapixel", "video", "second", "first-5s"]


@dataclass(frozen=True)
class Price:
    """A published price: ``usd`` per ``unit``.

    ``first-5s``: ``usd`` buys the first five seconds, ``per_extra_second`` each one
    after (Kling's rule). ``second`` counts video seconds at ``billing_fps`` when the
    provider bills frames that way (Wan: 16 frames = 1 s).
    """

    usd: float
    unit: PriceUnit
    source: str = ""  # where and when the number was read
    verified: bool = True  # False: an estimate not read from the provider's own page
    per_extra_second: float = 0.0
    billing_fps: float | None = None

    def estimate(self, *, megapixels: float = 0.0, seconds: float = 0.0) -> float:
        if self.unit == "megapixel":
            return self.usd * max(megapixels, 0.0)
        if self.unit == "second":
            return self.usd * max(seconds, 0.0)
        if self.unit == "first-5s":
            return self.usd + self.per_extra_second * max(0.0, seconds - 5.0)
        return self.usd  # per image / per video

    def label(self) -> str:
        unit = {"first-5s": "first 5 s"}.get(self.unit, self.unit)
        extra = f" + ${self.per_extra_second:g}/extra s" if self.per_extra_second else ""
        return f"${self.usd:g}/{unit}{extra}" + ("" if self.verified else " (unverified)")


def over_budget_hint(kind: str) -> str:
    return (
        "raise --max-cost (POPCORN_MAX_COST), or choose cheaper options, e.g. "
        f"--{kind}-opt model=... or a lower resolution"
    )


def check_cost(estimate: float | None, limit: float | None, what: str, kind: str) -> None:
    """Refuse before the call when ``estimate`` is above ``limit`` (or unknown)."""
    if limit is None:
        return
    if estimate is None:
        raise CostLimitError(
            f"no price is known for {what}, so --max-cost ${limit:g} cannot be enforced",
            f"give the price per unit with --{kind}-opt price=USD, or drop --max-cost",
        )
    if estimate > limit + 1e-12:
        raise CostLimitError(
            f"{what} would cost about ${estimate:.4f}, above --max-cost ${limit:g}",
            over_budget_hint(kind),
        )


def estimate_run_cost(settings: Settings) -> dict[str, float | None]:
    """Estimated USD per hosted stage (``{"image": 0.003, "video": 0.28}``) for one run of
    ``settings``; local backends are left out. No network call."""
    from llmpopcorn.core.registry import registry

    out: dict[str, float | None] = {}
    if not settings.render:
        return out
    for kind in ("image", "video"):
        name = getattr(settings, kind)
        try:
            cls = registry.get(kind, name)
        except ConfigError:
            continue  # the pipeline reports unknown names itself
        estimator = getattr(cls, "estimate_for_settings", None)
        if estimator is not None:
            out[kind] = estimator(settings)
    return out


def check_run_cost(settings: Settings) -> None:
    """``--max-cost``: the sum of the hosted stages' estimates must stay within it."""
    limit = getattr(settings, "max_cost", None)
    if limit is None:
        return
    costs = estimate_run_cost(settings)
    for kind, cost in costs.items():
        check_cost(cost, limit, f"the {kind} backend '{getattr(settings, kind)}'", kind)
    total = sum(c for c in costs.values() if c is not None)
    if total > limit + 1e-12:
        parts = " + ".join(f"{k} ${v:.4f}" for k, v in costs.items() if v is not None)
        raise CostLimitError(
            f"this run would cost about ${total:.4f} ({parts}), above --max-cost ${limit:g}",
            over_budget_hint("video"),
        )


def check_batch_cost(settings: Settings, runs: int, limit: float | None = None) -> float:
    """The hook for batches and studies: refuse before the first run when ``runs`` runs
    of ``settings`` would cost more than ``limit`` (default: ``settings.max_batch_cost``).
    Returns the estimated total (USD)."""
    limit = getattr(settings, "max_batch_cost", None) if limit is None else limit
    costs = estimate_run_cost(settings)
    if any(c is None for c in costs.values()):
        if limit is not None:
            raise CostLimitError(
                "a hosted backend of this batch has no known price, so its cost cap "
                f"${limit:g} cannot be enforced",
                "give the price with --image-opt/--video-opt price=USD, or drop the cap",
            )
        return float("nan")
    total = runs * sum(c for c in costs.values() if c is not None)
    if limit is not None and total > limit + 1e-12:
        raise CostLimitError(
            f"{runs} runs would cost about ${total:.2f}, above the batch cap ${limit:g}",
            "raise the cap (POPCORN_MAX_BATCH_COST), run fewer items or cheaper backends",
        )
    return total


class CostLedger:
    """What the hosted calls of a batch have spent (estimated USD), shared by every hosted
    backend of the process. ``max_batch_cost`` is checked against it before each call;
    a batch runner scopes it with :func:`batch_budget` (a CLI process is one batch)."""

    def __init__(self) -> None:
        self.spent = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def check(self, estimate: float | None, limit: float | None, what: str, kind: str) -> None:
        if limit is None:
            return
        if estimate is None:
            raise CostLimitError(
                f"no price is known for {what}, so the batch cap ${limit:g} cannot be enforced",
                f"give the price per unit with --{kind}-opt price=USD, or drop the cap",
            )
        with self._lock:
            spent = self.spent
        if spent + estimate > limit + 1e-12:
            raise CostLimitError(
                f"{what} (about ${estimate:.4f}) would take this batch's hosted spending from "
                f"${spent:.4f} past its cap ${limit:g}",
                "raise POPCORN_MAX_BATCH_COST, or run fewer items or cheaper backends",
            )

    def add(self, estimate: float | None) -> None:
        with self._lock:
            self.calls += 1
            self.spent += estimate or 0.0


_ledger = CostLedger()


def current_ledger() -> CostLedger:
    return _ledger


@contextmanager
def batch_budget() -> Iterator[CostLedger]:
    """A fresh ledger for the calls made inside the block (one batch of runs)."""
    global _ledger
    previous, _ledger = _ledger, CostLedger()
    try:
        yield _ledger
    finally:
        _ledger = previous
