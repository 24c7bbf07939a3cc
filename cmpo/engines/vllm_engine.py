"""vLLM rollout engine (GPU): a colocated ``vllm.LLM`` in the training processes, or a ``vllm serve``
server, through TRL's vLLM integration (``trl.generation.vllm_generation.VLLMGeneration``), which
builds the engine, streams the trainer's weights to it after each update (DeepSpeed ZeRO-3, FSDP
and PEFT included) and returns token ids with their sampling log-probs.

vLLM is an optional extra, imported only when this engine is built::

    pip install "interactcs-rl[vllm]"

Server mode, started before training (vLLM's native weight-transfer engine, as TRL's client needs)::

    VLLM_SERVER_DEV_MODE=1 vllm serve Qwen/Qwen2.5-7B-Instruct \\
        --weight-transfer-config '{"backend": "nccl"}' --logprobs-mode processed_logprobs --max-logprobs -1
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from cmpo.engines.base import Generation, GenerationEngine, SamplingParams, cut_at_stop

VLLM_INSTALL_HINT = 'pip install "interactcs-rl[vllm]"'


def require_vllm() -> None:
    """Raise ``ImportError`` naming what to install when vLLM is missing."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(
            "engine 'vllm' needs the vLLM package, which is not installed. Install it with "
            f"`{VLLM_INSTALL_HINT}` (a CUDA GPU is required), or use engine: transformers.")


def vllm_generation_kwargs(sampling: SamplingParams, *, mode: str = "colocate",
                           server_base_url: str | None = None, server_host: str = "0.0.0.0",
                           server_port: int = 8000, server_timeout: float = 240.0,
                           group_port: int = 51216, tensor_parallel_size: int = 1,
                           gpu_memory_utilization: float = 0.3, max_model_length: int | None = None,
                           enable_sleep_mode: bool = False) -> dict[str, Any]:
    """Keyword arguments of TRL's ``VLLMGeneration`` for one agent turn per prompt.

    Greedy decoding is vLLM's ``temperature=0``; turns end at ``sampling.stop_token_ids``; only the
    sampled token's log-prob is requested (``logprobs=0``).
    """
    if mode not in ("colocate", "server"):
        raise ValueError(f"vllm_mode must be 'colocate' or 'server', got {mode!r}")
    if not sampling.stop_token_ids:
        raise ValueError("sampling.stop_token_ids is empty: an agent turn would never end")
    return dict(
        mode=mode, server_base_url=server_base_url, server_host=server_host, server_port=server_port,
        server_timeout=server_timeout, group_port=group_port,
        tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
        max_model_length=max_model_length, enable_sleep_mode=enable_sleep_mode,
        temperature=0.0 if sampling.greedy else sampling.temperature,
        top_p=1.0 if sampling.greedy else sampling.top_p,
        top_k=0 if sampling.greedy else sampling.top_k,
        max_completion_length=sampling.max_new_tokens, logprobs=0,
        generation_kwargs={"stop_token_ids": list(sampling.stop_token_ids)},
    )


class VLLMEngine(GenerationEngine):
    """Rollouts with vLLM, weights synced from the trainer after each optimiser update.

    Args:
        model: the policy being trained (wrapped by accelerate).
        tokenizer: its tokenizer.
        sampling: :class:`SamplingParams`.
        accelerator: the trainer's ``Accelerator``.
        generation: an object with TRL's ``VLLMGeneration`` interface (``generate`` and
            ``sync_weights``); built from ``**vllm_kwargs`` when ``None``.
        **vllm_kwargs: see :func:`vllm_generation_kwargs`.
    """

    def __init__(self, model, tokenizer, sampling: SamplingParams, *, accelerator,
                 generation: Any = None, **vllm_kwargs: Any) -> None:
        self.sampling = sampling
        self.accelerator = accelerator
        self.filler = getattr(tokenizer, "eos_token_id", None) or 0
        # TRL's server mode gathers every process's prompts, tensor parallelism its group's: both
        # need the same calls, with as many prompts, on every process
        self.collective = (accelerator is not None and accelerator.num_processes > 1
                           and (vllm_kwargs.get("mode") == "server"
                                or vllm_kwargs.get("tensor_parallel_size", 1) > 1))
        if generation is None:
            require_vllm()
            from cmpo.compat import vllm_generation_class

            VLLMGeneration = vllm_generation_class()
            generation = VLLMGeneration(model=model, accelerator=accelerator,
                                        processing_class=tokenizer,
                                        **vllm_generation_kwargs(sampling, **vllm_kwargs))
        self.generation = generation

    def generate(self, prompts: list[list[int]]) -> list[Generation]:
        n = len(prompts)
        prompts = self.pad_to_peers(prompts, self.filler)
        if not prompts:
            return []
        _, completion_ids, logprobs, _ = self.generation.generate(prompts, images=None,
                                                                  num_generations=1)
        completion_ids, logprobs = completion_ids[:n], logprobs[:n] if logprobs is not None else None
        if logprobs is None:
            raise RuntimeError("vLLM returned no log-probs; start the server with --max-logprobs -1")
        out = []
        for ids, lps in zip(completion_ids, logprobs, strict=True):
            flat = [float("nan") if lp[0] is None else float(lp[0]) for lp in lps]
            if any(math.isnan(x) for x in flat):
                raise RuntimeError("vLLM returned a NaN log-prob for a sampled token")
            out.append(cut_at_stop(list(ids), flat, self.sampling.stop_token_ids))
        return out

    def sync_weights(self) -> None:
        self.generation.sync_weights()
