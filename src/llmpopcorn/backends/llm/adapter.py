"""Applying a LoRA adapter (``popcorn tune``'s, or any PEFT adapter folder) to a local
model loaded with transformers: ``--llm-adapter DIR``.

The adapter is merged into the weights once at load (no per-token PEFT overhead).
An adapter that ``popcorn tune`` wrote records the hash of its base model
(``tune.json``); applying it to another base is refused with the base it needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import ConfigError, require

ADAPTER_CONFIG = "adapter_config.json"


def check_adapter(adapter: str | Path, base: str | Path | None = None) -> dict[str, Any]:
    """The adapter's ``tune.json`` (empty for a foreign adapter); refuses a folder that is
    not a PEFT adapter, or one ``popcorn tune`` trained on another base model."""
    from llmpopcorn.backends.llm.tune import RECORD, file_sha256

    path = Path(adapter).expanduser()
    if not (path / ADAPTER_CONFIG).is_file():
        raise ConfigError(
            f"{path} is not a LoRA adapter folder (no {ADAPTER_CONFIG})",
            "pass the adapter folder popcorn tune wrote (OUT/adapter)",
        )
    record_path = path / RECORD
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    if base is not None and record.get("base_sha256"):
        found = file_sha256(Path(base).expanduser())
        if found != record["base_sha256"]:
            raise ConfigError(
                f"the adapter in {path} was trained on another base model "
                f"({record.get('base')}, sha256 {record['base_sha256']}; this one: {found})",
                "pass that base with --llm-model, or tune an adapter for this one",
            )
    return record


def apply_adapter(model: Any, adapter: str | Path) -> Any:
    """``model`` with the adapter's weights merged in (a plain transformers model)."""
    require("peft", "tune", "--llm-adapter")
    from peft import PeftModel

    tuned = PeftModel.from_pretrained(model, str(Path(adapter).expanduser()), is_trainable=False)
    return tuned.merge_and_unload()


def save_merged(base: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """The base model with the adapter merged in, saved as a Hugging Face folder (float32
    safetensors + tokenizer): for runtimes that cannot apply an adapter themselves (the
    local backend's onnxruntime-genai converts such a folder once)."""
    from llmpopcorn.backends.llm.tune import load_base

    check_adapter(adapter, base)
    model, tokenizer = load_base(base)
    out = Path(out).expanduser()
    apply_adapter(model, adapter).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
