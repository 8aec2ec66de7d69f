"""A converted local model on ONNX Runtime GenAI (see :mod:`.local_build`).

Each call samples with its own generator seeded from the request (``random_seed`` of
its search options), so concurrent calls neither share nor disturb a random state: the
same seed gives the same reply alone or beside others (tested with threads). The reply
is held to the request's schema by llguidance, built into onnxruntime-genai
(:mod:`.decoding`). Tokens are produced one step at a time and the deadline is checked
between steps; a prompt's prefill, one step, always completes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from llmpopcorn.backends.llm.decoding import (
    REASONING_TOKENS,
    REPETITION_PENALTY,
    Deadline,
    chat_messages,
    finish,
    grammar,
    grammar_fault,
    penalise,
)
from llmpopcorn.core.types import GRAMMAR_FAULT, ChatRequest, Completion, Message

log = logging.getLogger(__name__)


class OnnxGenAIModel:
    """One loaded model (load it once per process: :mod:`.local` keeps it)."""

    runtime = "onnxruntime-genai"

    def __init__(self, model_dir: Path):
        import onnxruntime_genai as og

        self.og = og
        self.model_dir = Path(model_dir)
        self.model = og.Model(str(model_dir))
        self.tokenizer = og.Tokenizer(self.model)
        config = json.loads((self.model_dir / "genai_config.json").read_text(encoding="utf-8"))
        self.context_length = int(config["model"]["context_length"])
        eos = config["model"].get("eos_token_id", [])
        self.eos = set(eos if isinstance(eos, list) else [eos])

    def encode(self, messages: list[Message]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            json.dumps(chat_messages(messages)), add_generation_prompt=True
        )
        return [int(t) for t in self.tokenizer.encode(text)]

    def generate(
        self,
        request: ChatRequest,
        *,
        deadline: Deadline,
        reasoning_tokens: int = REASONING_TOKENS,
        repetition_penalty: float = REPETITION_PENALTY,
    ) -> Completion:
        og = self.og
        ids = self.encode(request.messages)
        max_tokens = max(1, min(request.max_tokens, self.context_length - len(ids)))
        params = og.GeneratorParams(self.model)
        search: dict[str, Any] = {"max_length": len(ids) + max_tokens}
        if request.temperature > 0:
            search.update(do_sample=True, temperature=request.temperature, top_p=request.top_p)
            search["random_seed"] = (request.seed or 0) % 2**31
        else:
            search["do_sample"] = False
        params.set_search_options(**search)
        method = "parse"
        if request.response_schema:
            params.set_guidance(*grammar(request, reasoning_tokens))
            method = "schema"
        generator = og.Generator(self.model, params)
        generator.append_tokens(ids)
        tokens: list[int] = []
        try:
            timed_out = self._decode(generator, tokens, deadline, repetition_penalty)
            why = finish(tokens, self.eos, max_tokens, timed_out)
        except RuntimeError as exc:  # raised by whichever call commits the refused token
            if not grammar_fault(exc):
                raise
            log.warning(
                "the constrained decoder stopped the reply after %d tokens: %s",
                len(tokens),
                str(exc).splitlines()[0][:200],
            )
            why = GRAMMAR_FAULT
        text = self.tokenizer.decode([t for t in tokens if t not in self.eos])
        return Completion(
            text=text,
            finish_reason=why,
            prompt_tokens=len(ids),
            completion_tokens=len(tokens),
            method=method,
        )

    @staticmethod
    def _decode(
        generator: Any, tokens: list[int], deadline: Deadline, repetition_penalty: float
    ) -> bool:
        """Generate into ``tokens`` until the generator is done; True when the deadline
        stopped it."""
        while not generator.is_done():
            if deadline.passed():
                return True
            if tokens and repetition_penalty != 1.0:
                # the grammar's mask is applied after these logits (checked), so a token
                # it forces is still taken however much it is penalised
                logits = np.array(generator.get_logits(), dtype=np.float32, copy=True)
                generator.set_logits(penalise(logits, tokens, repetition_penalty))
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
        return False
