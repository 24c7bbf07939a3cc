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

from interactcs_gym.core.agent import Agent


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
        self._seed, self._turns = 0, 0

    def reset(self, *, seed: int | None = None) -> None:
        self._seed, self._turns = 0 if seed is None else int(seed), 0

    def act(self, observation: str, info: dict[str, Any]) -> str:
        torch = self._torch
        messages = info.get("messages") or [{"role": "user", "content": observation}]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False)
        ids = torch.tensor([list(ids)])
        stops = sorted({self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")})
        sampling = ({"do_sample": False} if self.greedy else
                    {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0})
        # Each turn samples from its own generator state, (reset seed, turn): replays are exact and
        # the caller's global torch RNG is left as it was.
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(self._seed * 1_000_003 + self._turns)
            self._turns += 1
            sequences = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                            max_new_tokens=self.max_new_tokens, eos_token_id=stops,
                                            pad_token_id=self.tokenizer.pad_token_id or stops[0],
                                            **sampling)
        out = [int(t) for t in sequences[0, ids.shape[1]:] if int(t) not in stops]
        return self.tokenizer.decode(out, skip_special_tokens=False)
