"""The one interface every rollout engine implements (SPEC 8.5).

An engine turns a batch of token-id prompts into one completion each and returns, for every
completion, the sampled token ids and their log-probabilities under the sampling distribution
(after temperature, as vLLM's ``processed_logprobs`` reports them). Prompts go in as token ids and
completions come out as token ids: no text is re-tokenised between generation and training.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    """How an engine samples one agent turn.

    ``stop_token_ids`` end a turn (the chat template's end-of-turn token, e.g. ``<|im_end|>``, and
    the tokenizer's eos); the stop token that ended a turn is part of the returned completion.
    ``greedy`` = argmax decoding (temperature, top-p and top-k are then ignored).
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = no top-k), got {self.top_k}")
        self.stop_token_ids = tuple(int(t) for t in self.stop_token_ids)


@dataclass
class Generation:
    """One completion: the sampled ids (the stop token included when one ended the turn), the
    log-probability of each, and why it ended (``"stop"`` or ``"length"``)."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str

    def __post_init__(self) -> None:
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError(f"{len(self.token_ids)} token ids but {len(self.logprobs)} log-probs")


class GenerationEngine(abc.ABC):
    """Batched generation from token ids. ``sync_weights`` is called after every optimiser update.

    A *collective* engine (weights sharded over processes, a vLLM server shared by them) needs every
    process to make the same calls with as many prompts: the rollout loop asks
    :meth:`continue_rollout` whether any process still has dialogues, and :meth:`pad_to_peers` fills
    a call up with one-token prompts whose completions are dropped.
    """

    sampling: SamplingParams
    accelerator = None
    collective: bool = False

    @abc.abstractmethod
    def generate(self, prompts: list[list[int]]) -> list[Generation]:
        """One completion per prompt, in the order of ``prompts``, from one batched call."""

    def run_dialogues(self, prompts: dict[Hashable, list[int]],
                      on_turn: Callable[[Hashable, Generation], list[int] | None]) -> int:
        """Sample agent turns for many dialogues until every one has ended; returns the number of
        generation calls made.

        ``prompts`` maps each dialogue to its first prompt. Whenever a dialogue's turn is complete,
        ``on_turn(key, generation)`` is called (the caller steps its env there) and returns the
        dialogue's next prompt, which extends the last one, or ``None`` once it has ended.
        This implementation is turn-synchronous: each call holds every dialogue waiting for a turn,
        env steps run between calls, and (for a collective engine) every process makes the same
        calls. Engines that can let new turns join rows still writing override it.
        """
        active = dict(prompts)
        calls = 0
        while self.continue_rollout(bool(active)):
            keys = list(active)
            generations = self.generate([active[k] for k in keys])
            calls += 1
            active = {}
            for key, gen in zip(keys, generations, strict=True):
                following = on_turn(key, gen)
                if following is not None:
                    active[key] = following
        return calls

    def sync_weights(self) -> None:
        """Make the engine sample from the trainer's current weights (no-op when they are shared)."""

    def clear_cache(self) -> None:
        """Drop state kept between calls for the same dialogues (called when a rollout ends)."""

    def close(self) -> None:
        """Release the engine's resources."""

    def continue_rollout(self, has_work: bool) -> bool:
        """Whether the turn loop goes on: this process has dialogues left or, for a collective
        engine, any process has."""
        if not self.collective:
            return has_work
        import torch

        flag = torch.tensor([1.0 if has_work else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def pad_to_peers(self, prompts: list[list[int]], filler: int) -> list[list[int]]:
        """For a collective engine, ``prompts`` followed by ``[filler]`` prompts up to the largest
        count of any process (the caller keeps the first ``len(prompts)`` completions)."""
        if not self.collective:
            return prompts
        import torch

        count = torch.tensor([len(prompts)], device=self.accelerator.device)
        width = int(self.accelerator.gather(count).max().item())
        return list(prompts) + [[int(filler)]] * (width - len(prompts))


def stop_token_ids_for(tokenizer, generation_config=None) -> tuple[int, ...]:
    """End-of-turn ids for a chat tokenizer: its eos, ``<|im_end|>``/``<|eot_id|>``/``<end_of_turn>``
    when the vocabulary has them, and the model's ``generation_config.eos_token_id``."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for name in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        if name in vocab:
            ids.append(int(vocab[name]))
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is not None:
        ids.extend(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    return tuple(dict.fromkeys(ids))


def cut_at_stop(token_ids: list[int], logprobs: list[float],
                stop_token_ids: tuple[int, ...]) -> Generation:
    """Trim a raw completion after its first stop token (kept); ``"length"`` if there is none."""
    stops = set(stop_token_ids)
    for i, tok in enumerate(token_ids):
        if tok in stops:
            return Generation(list(token_ids[: i + 1]), list(logprobs[: i + 1]), "stop")
    return Generation(list(token_ids), list(logprobs), "length")
