"""Transformers rollout engine: batched ``model.generate`` with left padding (CPU and GPU).

The engine samples from the training model itself (no copy, nothing to sync). Under DeepSpeed
ZeRO-3 or FSDP the parameters are gathered for generation the way TRL's GRPOTrainer does it
(``unwrap_model_for_generation``, FSDP ``summon_full_params``).

Prefix reuse: the keys and values a ``generate`` call computed are kept, and when every prompt of
the next call extends one dialogue of the previous call (the next turn of the same dialogues, as
the rollout collector asks), only the new tokens are fed: each turn costs the prefill of its
user reply, not of the whole dialogue (vLLM's prefix caching plays this part on GPUs). Any other
call, or ``sync_weights`` (new weights), starts afresh; repeated prompts (the G copies of a
group's opening) are prefilled once. Batches split by ``max_batch_size`` are not reused.

Log-probabilities: temperature, top-k and top-p are applied by logits processors that this engine
passes to ``generate`` (the generation config itself asks for plain sampling), followed by
:class:`SampledLogprobRecorder`, which therefore sees the final sampling distribution of each step
and records the log-probability of the token drawn from it. Memory stays at one ``batch x vocab``
row per step instead of the ``steps x batch x vocab`` of ``output_scores=True``.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from cmpo.engines.base import Generation, GenerationEngine, SamplingParams, cut_at_stop


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


class TransformersEngine(GenerationEngine):
    """Batched sampling with ``transformers``' ``generate``.

    Args:
        model: the policy (possibly wrapped by accelerate: DDP, DeepSpeed, FSDP).
        tokenizer: its tokenizer (only ``pad_token_id`` is used).
        sampling: :class:`SamplingParams`; ``stop_token_ids`` must be set.
        accelerator: the trainer's ``Accelerator`` (``None`` for a bare model).
        max_batch_size: most prompts per ``generate`` call (longer batches are split; 0 = no limit).
    """

    def __init__(self, model, tokenizer, sampling: SamplingParams, *, accelerator=None,
                 max_batch_size: int = 0) -> None:
        if not sampling.stop_token_ids:
            raise ValueError("sampling.stop_token_ids is empty: an agent turn would never end; "
                             "use cmpo.engines.stop_token_ids_for(tokenizer)")
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.accelerator = accelerator
        self.max_batch_size = int(max_batch_size)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
        self.pad_token_id = int(pad)
        self._prefix: _PrefixCache | None = None
        if accelerator is not None and accelerator.num_processes > 1:
            from trl.distributed import DistributedBackend

            backend = DistributedBackend(accelerator)  # sharded weights: each forward is collective
            self.collective = backend.is_zero3 or backend.is_fsdp

    def _processors(self) -> tuple[LogitsProcessorList, SampledLogprobRecorder]:
        s = self.sampling
        procs = LogitsProcessorList()
        if not s.greedy:
            if s.temperature != 1.0:
                procs.append(TemperatureLogitsWarper(s.temperature))
            if s.top_k > 0:
                procs.append(TopKLogitsWarper(s.top_k))
            if s.top_p < 1.0:
                procs.append(TopPLogitsWarper(s.top_p))
        recorder = SampledLogprobRecorder()
        procs.append(recorder)
        return procs, recorder

    def _generation_config(self) -> GenerationConfig:
        # Plain sampling/argmax: the warpers are ours (see _processors), so none are added here.
        # top_k=0 and top_p=1.0 say "off" explicitly: None would be read as unset and replaced by
        # transformers' defaults (top_k=50), a warper that would run after our log-prob recorder.
        return GenerationConfig(max_new_tokens=self.sampling.max_new_tokens,
                                do_sample=not self.sampling.greedy, temperature=1.0, top_k=0,
                                top_p=1.0, eos_token_id=list(self.sampling.stop_token_ids),
                                pad_token_id=self.pad_token_id, use_cache=True,
                                return_dict_in_generate=True)

    @contextlib.contextmanager
    def _unwrapped(self):
        """The bare model, with its parameters whole: gathered under ZeRO-3, summoned under FSDP1
        (as TRL's GRPOTrainer does for transformers generation)."""
        if self.accelerator is None:
            yield self.model
            return
        from trl.distributed import DistributedBackend
        from trl.models.utils import unwrap_model_for_generation

        with unwrap_model_for_generation(self.model, self.accelerator,
                                         gradient_checkpointing_kwargs={"use_reentrant": False}) as bare, \
                DistributedBackend(self.accelerator).summon_full_params(self.model, recurse=False):
            yield bare

    @torch.no_grad()
    def generate(self, prompts: list[list[int]]) -> list[Generation]:
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        n = len(prompts)
        prompts = self.pad_to_peers(prompts, self.pad_token_id)
        if not prompts:
            return []
        return self._generate_all(prompts)[:n]

    def _generate_all(self, prompts: list[list[int]]) -> list[Generation]:
        size = self.max_batch_size or len(prompts)
        out: list[Generation | None] = [None] * len(prompts)
        with self._unwrapped() as model:
            was_training = model.training
            model.eval()
            try:
                rows = None
                if size >= len(prompts):
                    if self._prefix is not None:  # every prompt continues a dialogue of the last call?
                        rows = self._prefix.match(prompts)
                    if rows is None:  # the G prompts of a group are one prompt: prefill it once
                        self._prefix, rows = _PrefixCache.shared(model, prompts, self.pad_token_id)
                if rows is not None:
                    return self._generate(model, prompts, rows)
                self._prefix = None
                # Similar lengths share a call, so that little compute goes to padding.
                order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
                for start in range(0, len(order), size):
                    chunk = order[start:start + size]
                    for i, gen in zip(chunk, self._generate(model, [prompts[i] for i in chunk], None,
                                                            keep=size >= len(prompts))):
                        out[i] = gen
            finally:
                model.train(was_training)
        return out  # type: ignore[return-value]

    def sync_weights(self) -> None:
        """The weights changed: cached keys and values are stale."""
        self._prefix = None

    def clear_cache(self) -> None:
        self._prefix = None

    def _generate(self, model, prompts: list[list[int]], rows: list[int] | None, *,
                  keep: bool = True) -> list[Generation]:
        """One ``generate`` call; with ``rows``, prompt i continues row ``rows[i]`` of the cache
        and only its new tokens are fed (left-padded after the cached columns)."""
        device = next(model.parameters()).device
        cache, past_ids, past_mask = None, None, None
        if rows is not None:
            cache, past_ids, past_mask, prompts_new = self._prefix.select(rows, prompts)
        else:
            prompts_new = prompts
        width = max(len(p) for p in prompts_new)
        new_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        new_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts_new):  # left padding: every prompt ends at the same column
            new_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            new_mask[row, width - len(ids):] = 1
        input_ids = new_ids if past_ids is None else torch.cat([past_ids, new_ids], dim=1)
        attention_mask = new_mask if past_mask is None else torch.cat([past_mask, new_mask], dim=1)
        if cache is None:
            cache = DynamicCache(config=model.config)
        processors, recorder = self._processors()
        out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                             past_key_values=cache, generation_config=self._generation_config(),
                             logits_processor=processors)
        generated = out.sequences[:, input_ids.shape[1]:]
        logprobs = recorder.finish(generated).cpu().tolist()
        gens = [cut_at_stop(ids, lps, self.sampling.stop_token_ids)
                for ids, lps in zip(generated.cpu().tolist(), logprobs)]
        self._prefix = _PrefixCache.after(out.past_key_values, out.sequences.cpu(), attention_mask,
                                          gens) if keep else None
        return gens


class _PrefixCache:
    """The keys and values the last ``generate`` call left, so that the next turn of the same
    dialogues feeds only its new tokens (what vLLM's prefix caching does on GPUs).

    Column j of the cache holds token ``ids[r, j]`` of row r; ``mask[r, j] = 1`` when that token
    belongs to the row's dialogue (0 for padding, and for the pad tokens ``generate`` feeds a row
    after its turn ended). ``tokens[r]`` is the row's dialogue so far (its unmasked ids).
    """

    def __init__(self, kv, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.kv, self.ids, self.mask = kv, ids, mask
        self.tokens = [tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask)]
        self.by_prefix = {(len(t), t): r for r, t in enumerate(self.tokens)}
        self.lengths = sorted({len(t) for t in self.tokens})

    @classmethod
    def after(cls, kv, sequences: torch.Tensor, attention_mask: torch.Tensor,
              gens: list[Generation]) -> "_PrefixCache | None":
        width = attention_mask.shape[1]
        length = kv.get_seq_length()  # the last sampled token was never fed: one column short
        if length != sequences.shape[1] - 1:
            return None
        produced = torch.zeros((len(gens), sequences.shape[1] - width), dtype=torch.long)
        for r, gen in enumerate(gens):
            produced[r, :len(gen.token_ids)] = 1
        mask = torch.cat([attention_mask.cpu(), produced], dim=1)[:, :length]
        return cls(kv, sequences[:, :length], mask)

    @classmethod
    def shared(cls, model, prompts: list[list[int]], pad_token_id: int):
        """When prompts repeat (a group's G copies of one opening), prefill each distinct prompt
        but its last token once; returns (cache, row of each prompt), or (None, None)."""
        distinct: dict[tuple[int, ...], int] = {}
        rows = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
        if len(distinct) == len(prompts) or min(len(p) for p in distinct) < 2:
            return None, None
        heads = [list(p[:-1]) for p in distinct]
        width = max(len(h) for h in heads)
        ids = torch.full((len(heads), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(heads), width), dtype=torch.long)
        for r, head in enumerate(heads):
            ids[r, width - len(head):] = torch.tensor(head, dtype=torch.long)
            mask[r, width - len(head):] = 1
        device = next(model.parameters()).device
        kv = DynamicCache(config=model.config)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens only
        model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
              past_key_values=kv, use_cache=True, logits_to_keep=1)
        return cls(kv, ids, mask), rows

    def match(self, prompts: list[list[int]]) -> list[int] | None:
        """For each prompt, the row whose dialogue it extends (each row at most once), else None."""
        rows = []
        for prompt in prompts:
            row = next((self.by_prefix[key] for n in reversed(self.lengths) if n < len(prompt)
                        and (key := (n, tuple(prompt[:n]))) in self.by_prefix), None)
            if row is None or row in rows:
                return None
            rows.append(row)
        return rows

    def select(self, rows: list[int], prompts: list[list[int]]):
        """The cache reduced to (and reordered, or repeated, as) ``rows``; the prompts' new tokens."""
        index = torch.tensor(rows, dtype=torch.long)
        self.kv.batch_select_indices(index.to(self.kv.layers[0].keys.device)
                                     if hasattr(self.kv, "layers") else index)
        new = [prompt[len(self.tokens[r]):] for prompt, r in zip(prompts, rows)]
        return self.kv, self.ids[index], self.mask[index], new
