"""Applying a LoRA adapter (``popcorn tune``'s, or any PEFT adapter folder) to a local
model loaded with transformers: ``--llm-adapter DIR`` (``--llm local`` or
``--llm transformers``, on the transformers runtime).

The adapter is merged into the weights once at load (no per-token PEFT overhead). An
adapter that ``popcorn tune`` wrote records the hash of its base model (``tune.json``);
applying it to another base is refused with the base it needs. Run ids and study cells
see the adapter's hash in the model id (:func:`adapter_model_id`), so another or a
retrained adapter is another identity.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import ConfigError, require

ADAPTER_CONFIG = "adapter_config.json"
#: what popcorn tune writes beside the adapter
RECORD = "tune.json"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, or of a folder's files (names and bytes, in name order)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def check_adapter(adapter: str | Path, base: str | Path | None = None) -> dict[str, Any]:
    """The adapter's ``tune.json`` (empty for a foreign adapter); refuses a folder that is
    not a PEFT adapter, or one ``popcorn tune`` trained on another base model."""
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


def adapter_model_id(model_id: str, adapter: str | Path | None) -> str:
    """``model_id`` plus the adapter's hash (unchanged without an adapter)."""
    if not adapter:
        return model_id
    path = Path(adapter).expanduser()
    return f"{model_id}+adapter:{file_sha256(path) if path.is_dir() else adapter}"


def plain_model(model: Any) -> Any:
    """A model transformers loaded from a GGUF file is dequantised but still marked
    GGUF-quantised, which PEFT training and merging refuse: the same weights in a plain
    model of the same class (other models are returned as they are)."""
    config = model.config
    if getattr(config, "quantization_config", None) is None:
        return model
    fields = {k: v for k, v in config.to_dict().items() if k != "quantization_config"}
    plain = type(model)(type(config).from_dict(fields))
    plain.load_state_dict(model.state_dict())
    return plain


def apply_adapter(model: Any, adapter: str | Path) -> Any:
    """``model`` with the adapter's weights merged in (a plain transformers model)."""
    require("peft", "tune", "--llm-adapter")
    from peft import PeftModel

    folder = str(Path(adapter).expanduser())
    tuned = PeftModel.from_pretrained(plain_model(model), folder, is_trainable=False)
    return tuned.merge_and_unload()
