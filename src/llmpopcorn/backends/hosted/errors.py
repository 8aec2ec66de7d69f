"""Errors of the hosted generators: each says what happened and what to do."""

from __future__ import annotations

from llmpopcorn.core.errors import ConfigError, RenderError


class HostedError(RenderError):
    """A hosted generator failed (after retries, or for good)."""


class ContentRefusedError(HostedError):
    """The provider refused the prompt or the image under its content policy."""

    def __init__(self, message: str, hint: str | None = None, *, detail: str = ""):
        super().__init__(message, hint)
        self.detail = detail


class HostedTimeoutError(HostedError):
    """The provider did not answer, or the job did not finish, in time."""


class HostedAuthError(ConfigError):
    """The key is missing or rejected, or the account is out of credit (every run would
    fail alike, so a study stops at once)."""


class CostLimitError(ConfigError):
    """The estimated cost is above ``--max-cost`` (refused before any call)."""
