"""Sampling for the transformers engine, and the log-probability of each sampled token.

Temperature, top-k and top-p are applied by logits processors that the engine passes to
``generate`` (:func:`logits_processors`; the generation config itself asks for plain sampling,
:func:`generation_config`), followed by :class:`SampledLogprobRecorder`, which therefore sees the
final sampling distribution of each step and records the log-probability of the token drawn from
it. Memory stays at one ``batch x vocab`` row per step instead of the ``steps x batch x vocab`` of
``output_scores=True``.
"""

from __future__ import annotations

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from cmpo.engines.base import SamplingParams


class SampledLogprobRecorder(LogitsProcessor):
    """Last logits processor of a ``generate`` call: keeps ``log_softmax`` of the step's scores and,
    at the next step (once the sampled token is in ``input_ids``), stores that token's log-prob."""

    def __init__(self) -> None:
        self.logprobs: list[torch.Tensor] = []
        self._pending: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._pending is not None:
            self.logprobs.append(self._pending.gather(1, input_ids[:, -1:]).squeeze(1))
        self._pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, completion_ids: torch.Tensor) -> torch.Tensor:
        """``(batch, n_new)`` log-probs of ``completion_ids`` (the new tokens ``generate`` returned)."""
        n_new = completion_ids.shape[1]
        rows = list(self.logprobs[:n_new])
        if len(rows) < n_new and self._pending is not None:
            rows.append(self._pending.gather(1, completion_ids[:, len(rows):len(rows) + 1]).squeeze(1))
        if len(rows) != n_new:
            raise RuntimeError(f"recorded {len(rows)} log-prob steps for {n_new} generated tokens")
        self.logprobs, self._pending = [], None
        return torch.stack(rows, dim=1) if rows else completion_ids.new_zeros((len(completion_ids), 0),
                                                                              dtype=torch.float32)


def logits_processors(sampling: SamplingParams) -> tuple[LogitsProcessorList, SampledLogprobRecorder]:
    """The warpers of ``sampling`` (temperature, top-k, top-p; none when greedy), then the recorder."""
    procs = LogitsProcessorList()
    if not sampling.greedy:
        if sampling.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k > 0:
            procs.append(TopKLogitsWarper(sampling.top_k))
        if sampling.top_p < 1.0:
            procs.append(TopPLogitsWarper(sampling.top_p))
    recorder = SampledLogprobRecorder()
    procs.append(recorder)
    return procs, recorder


def generation_config(sampling: SamplingParams, pad_token_id: int) -> GenerationConfig:
    """Plain sampling (or argmax when greedy) of at most ``sampling.max_new_tokens`` tokens, ending
    at the stop tokens: the warpers are :func:`logits_processors`', so none are added here.
    ``top_k=0`` and ``top_p=1.0`` say "off" explicitly: ``None`` would be read as unset and replaced
    by transformers' defaults (``top_k=50``), a warper that would run after the log-prob recorder."""
    off = {} if sampling.greedy else {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
    return GenerationConfig(max_new_tokens=sampling.max_new_tokens, do_sample=not sampling.greedy, **off,
                            eos_token_id=list(sampling.stop_token_ids), pad_token_id=pad_token_id,
                            use_cache=True, return_dict_in_generate=True)
