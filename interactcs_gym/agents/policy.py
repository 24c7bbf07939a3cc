"""An agent that plays a local model folder (HF format): the trained policies of ``cmpo``.

    python -m interactcs_gym.evaluate --env FDS-Hard-v0 --agent policy \\
        --agent-kwargs '{"model": "runs/reproduce/cmpo-pid/final"}' --users 80 --seeds 3 --out x.jsonl

Each turn renders ``info["messages"]`` with the model's own chat template (generation prompt
added) and generates one turn, sampled at ``temperature`` (seeded by ``reset(seed=...)``) or argmax
with ``greedy=True``; the end-of-turn token ends it. torch and transformers are imported when the
agent is built, never when :mod:`interactcs_gym` is imported.

Batched: ``act_batch`` generates the turns of many episodes in one left-padded ``generate`` call,
and the evaluation CLI uses it for ``--batch-size N`` episodes in lockstep (default 32; ``1`` plays
one at a time through ``act``). A batch call is seeded from its rows' agent seeds and dialogue
lengths, so greedy turns do not depend on which episodes share the batch (up to padding numerics),
while sampled turns do: sampled results are reproducible for the same ``--batch-size`` and
episodes, not across batch sizes. ``python -m cmpo.evaluate_policy`` scores the same model through
CMPO's rollout engine.
"""

from __future__ import annotations

import hashlib
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

    def _prompt(self, observation: str, info: dict[str, Any]) -> list[int]:
        messages = info.get("messages") or [{"role": "user", "content": observation}]
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                       tokenize=True, return_dict=False))

    def _stops(self) -> list[int]:
        return sorted({self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")})

    def _sampling(self) -> dict[str, Any]:
        return ({"do_sample": False} if self.greedy else
                {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0})

    def act_batch(self, observations: list[str], infos: list[dict[str, Any]], *,
                  seeds: list[int] | None = None) -> list[str]:
        """One turn per row in one ``generate`` call: prompts left-padded, each row stops at its
        end-of-turn token. Seeded by ``(seeds, dialogue lengths)`` (module docstring)."""
        if len(observations) != len(infos):
            raise ValueError(f"policy agent: {len(observations)} observations but {len(infos)} infos")
        if not observations:
            return []
        torch = self._torch
        prompts = [self._prompt(obs, info) for obs, info in zip(observations, infos)]
        stops = self._stops()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else stops[0]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        rows = [(int(seed), len(info.get("messages") or ()))
                for seed, info in zip(seeds or [0] * len(infos), infos)]
        call_seed = int.from_bytes(hashlib.sha256(repr(rows).encode()).digest()[:8], "little")
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(call_seed)
            sequences = self.model.generate(input_ids=ids, attention_mask=mask,
                                            max_new_tokens=self.max_new_tokens, eos_token_id=stops,
                                            pad_token_id=pad, **self._sampling())
        return [self._decode(row[width:], stops) for row in sequences]

    def _decode(self, generated: Any, stops: list[int]) -> str:
        """The turn's text: the tokens before the first end-of-turn token."""
        out = []
        for token in (int(t) for t in generated):
            if token in stops:
                break
            out.append(token)
        return self.tokenizer.decode(out, skip_special_tokens=False)

    def act(self, observation: str, info: dict[str, Any]) -> str:
        torch = self._torch
        ids = torch.tensor([self._prompt(observation, info)])
        stops = self._stops()
        sampling = self._sampling()
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
