"""An agent that plays a local model folder (HF format): the trained policies of ``cmpo``.

    python -m interactcs_gym.evaluate --env FDS-Hard-v0 --agent policy \\
        --agent-kwargs '{"model": "runs/reproduce/cmpo-pid/final"}' --users 80 --seeds 3 --out x.jsonl

Each turn renders ``info["messages"]`` with the model's own chat template (generation prompt
added) and generates one turn, sampled at ``temperature`` (seeded by ``reset(seed=...)``) or argmax
with ``greedy=True``; the end-of-turn token ends it. torch and transformers are imported when the
agent is built, never when :mod:`interactcs_gym` is imported. One episode at a time: for many
episodes at once in one generation call per turn, ``python -m cmpo.evaluate_policy`` scores the
same model on the same episodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interactcs_gym.agents.base import Agent


class PolicyAgent(Agent):
    """Plays the model of folder ``model`` (module docstring).

    Args:
        model: local model folder (``AutoModelForCausalLM`` + its tokenizer with a chat template).
        temperature: sampling temperature (> 0).
        greedy: argmax decoding instead of sampling.
        max_new_tokens: most tokens of one turn.
    """

    name = "policy"

    def __init__(self, model: str, temperature: float = 1.0, greedy: bool = False,
                 max_new_tokens: int = 96) -> None:
        if not Path(model).is_dir():
            raise ValueError(f"policy agent: no model folder at {model!r}")
        if temperature <= 0:
            raise ValueError(f"policy agent: temperature must be > 0, got {temperature}")
        if max_new_tokens < 1:
            raise ValueError(f"policy agent: max_new_tokens must be >= 1, got {max_new_tokens}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if self.tokenizer.chat_template is None:
            raise ValueError(f"policy agent: the tokenizer of {model!r} has no chat template")
        self.model = AutoModelForCausalLM.from_pretrained(model).eval()
        self.temperature, self.greedy, self.max_new_tokens = float(temperature), bool(greedy), int(max_new_tokens)
        self._generator = torch.Generator().manual_seed(0)

    def reset(self, *, seed: int | None = None) -> None:
        self._generator = self._torch.Generator().manual_seed(0 if seed is None else int(seed))

    def act(self, observation: str, info: dict[str, Any]) -> str:
        torch = self._torch
        messages = info.get("messages") or [{"role": "user", "content": observation}]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False)
        ids = torch.tensor([list(ids)])
        stops = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")}
        out: list[int] = []
        past = None
        with torch.no_grad():
            for _ in range(self.max_new_tokens):
                res = self.model(input_ids=ids, past_key_values=past, use_cache=True)
                past, logits = res.past_key_values, res.logits[0, -1].float()
                if self.greedy:
                    token = int(logits.argmax())
                else:
                    probs = torch.softmax(logits / self.temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=self._generator))
                if token in stops:
                    break
                out.append(token)
                ids = torch.tensor([[token]])
        return self.tokenizer.decode(out, skip_special_tokens=False)
