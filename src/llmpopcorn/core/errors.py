"""Errors with actionable messages.

Every error the user can cause carries a ``hint`` that says how to fix it. The CLI
prints ``error: <message>`` and ``hint: <hint>`` and exits with status 2.
"""

from __future__ import annotations


class PopcornError(Exception):
    """Base class for all errors raised on purpose by llmpopcorn."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class ConfigError(PopcornError):
    """A setting is missing, malformed or contradicts another one."""


class UnknownBackendError(ConfigError):
    """A backend name that is not registered."""


class MissingExtraError(PopcornError):
    """An optional dependency group is not installed."""

    def __init__(self, package: str, extra: str, what: str = ""):
        what = f" for {what}" if what else ""
        super().__init__(
            f"the Python package '{package}' is needed{what} but is not installed",
            f"install the extra: pip install 'llmpopcorn[{extra}]'",
        )
        self.package = package
        self.extra = extra


class InputError(PopcornError):
    """A query or other user input that cannot be used."""


class DataError(PopcornError):
    """A data file (corpus, queries, model) is missing or malformed."""


class LLMError(PopcornError):
    """The LLM backend failed (connection, authentication, model not found...)."""


class InvalidReplyError(LLMError):
    """The LLM kept answering with replies that do not satisfy the output schema."""

    def __init__(self, message: str, hint: str | None = None, attempts: list | None = None):
        super().__init__(message, hint)
        self.attempts = attempts or []


class RenderError(PopcornError):
    """An image or video backend failed."""


def require(module: str, extra: str, what: str = ""):
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised via tests with a fake name
        raise MissingExtraError(module.split(".")[0], extra, what) from exc
