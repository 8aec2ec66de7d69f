"""One scrubber for secrets: everything the package writes or returns goes through it.

The secrets are the configured API keys: every key registered with
:func:`register_secret` (the settings' ``llm_api_key``, the key an LLM client
was built with) plus the values of the key variables in the environment
(:data:`SECRET_ENV_VARS` and any ``*_API_KEY``). :func:`scrub` replaces each of
them, raw and in its HTML-, JSON- and URL-escaped forms, with ``***``.

It is applied where records and reports are saved (:mod:`llmpopcorn.pipeline.report`),
to LLM replies (a server may echo the key), to error messages printed by the CLI
and, through :class:`SecretFilter`, to every log line.

Values shorter than :data:`MIN_SECRET_CHARS` are not treated as secrets: real
keys are long, and scrubbing a short value (``POPCORN_LLM_API_KEY=x``) would
mangle ordinary text.
"""

from __future__ import annotations

import copy
import functools
import html
import json
import logging
import os
import threading
from typing import Any
from urllib.parse import quote

#: environment variables whose values are always secrets (besides any ``*_API_KEY``)
SECRET_ENV_VARS = ("POPCORN_LLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
SECRET_ENV_SUFFIX = "_API_KEY"
MIN_SECRET_CHARS = 8
MASK = "***"

_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember ``value`` as a secret for the rest of the process."""
    if value and len(value.strip()) >= MIN_SECRET_CHARS:
        with _lock:
            _registered.add(value.strip())


def known_secrets(env: dict[str, str] | None = None) -> list[str]:
    """Every secret known now, longest first (so a key that contains another wins)."""
    env = os.environ if env is None else env
    found = set(_registered)
    for name, value in env.items():
        if name in SECRET_ENV_VARS or name.upper().endswith(SECRET_ENV_SUFFIX):
            value = (value or "").strip()
            if len(value) >= MIN_SECRET_CHARS:
                found.add(value)
    return sorted(found, key=len, reverse=True)


@functools.lru_cache(maxsize=256)
def _forms(secret: str) -> tuple[str, ...]:
    return tuple({secret, html.escape(secret), json.dumps(secret)[1:-1], quote(secret, safe="")})


def _all_forms() -> list[str]:
    """Every written form of every secret known now, longest secret first."""
    return [form for secret in known_secrets() for form in _forms(secret)]


def scrub(text: str, forms: list[str] | None = None) -> str:
    """``text`` with every known secret replaced by ``***`` (``forms``: from
    :func:`_all_forms`, when one caller scrubs many strings)."""
    if not text:
        return text
    for form in _all_forms() if forms is None else forms:
        if form in text:
            text = text.replace(form, MASK)
    return text


def scrub_data(value: Any, forms: list[str] | None = None) -> Any:
    """Scrub every string inside JSON-like data (dicts, lists, tuples); the secrets are
    looked up once per call, not once per string."""
    if forms is None:
        forms = _all_forms()
    if isinstance(value, str):
        return scrub(value, forms)
    if isinstance(value, dict):
        return {scrub_data(k, forms): scrub_data(v, forms) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_data(v, forms) for v in value)
    return value


class SecretFilter(logging.Filter):
    """A logging filter that scrubs the message, its arguments and any traceback text.

    The arguments keep their shape where that is enough (uvicorn's access formatter
    unpacks ``record.args`` into client, method, path...): a string argument is scrubbed
    in place, any other argument only if its text holds a secret. A secret that only
    shows once message and arguments are joined collapses the record to its scrubbed
    text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not known_secrets():
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the logger's problem
            return True
        if scrub(message) != message:
            if isinstance(record.msg, str):
                record.msg = scrub(record.msg)
            record.args = _scrub_args(record.args)
            try:
                still = scrub(record.getMessage()) != record.getMessage()
            except Exception:  # noqa: BLE001 - a scrubbed argument no longer fits its %d
                still = True
            if still:
                record.msg, record.args = scrub(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


def _scrub_arg(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, int | float):
        return value
    text = str(value)
    cleaned = scrub(text)
    return value if cleaned == text else cleaned


def _scrub_args(args: Any) -> Any:
    if isinstance(args, tuple):
        return tuple(_scrub_arg(a) for a in args)
    if isinstance(args, dict):  # logging's "%(name)s" form
        return {k: _scrub_arg(v) for k, v in args.items()}
    return args


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Add :class:`SecretFilter` to every handler of ``logger`` (default: the root)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())


def with_secret_filter(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a :func:`logging.config.dictConfig` dictionary (uvicorn's log_config)
    where every handler carries :class:`SecretFilter`: loggers that do not propagate to
    the root (uvicorn's) never pass the root's filtered handlers."""
    config = copy.deepcopy(config)
    config.setdefault("filters", {})[_FILTER_NAME] = {"()": f"{__name__}.SecretFilter"}
    for handler in config.get("handlers", {}).values():
        names = handler.setdefault("filters", [])
        if _FILTER_NAME not in names:
            names.append(_FILTER_NAME)
    return config


_FILTER_NAME = "popcorn_secrets"
