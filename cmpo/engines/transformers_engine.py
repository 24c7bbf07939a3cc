"""Transformers rollout engine: batched ``model.generate`` with left padding (CPU and GPU).

The engine samples from the training model itself (no copy, nothing to sync). Under DeepSpeed
ZeRO-3 or FSDP the parameters are gathered for generation the way TRL's GRPOTrainer does it
(:func:`cmpo.compat.unwrapped_for_generation`). It composes three parts, one job each:

* :mod:`cmpo.engines.sampling`: the sampling warpers and the log-prob of each sampled token;
* :mod:`cmpo.engines.scheduler`: which rows go into each ``generate`` call (a call ends once at most
  half of its rows are still writing; in a rollout, the next turns of ended dialogues join the rows
  still writing);
* :mod:`cmpo.engines.kv_cache`: in-place cache appends and the reuse of the previous turn's keys and
  values, so that each call feeds only new tokens.

Prefix reuse applies when every prompt of a call extends a dialogue of the previous turn (the next
turn of the same dialogues, as the rollout collector asks). Any other call, or ``sync_weights``
(new weights), starts afresh; batches split by ``max_batch_size`` are not reused.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import StoppingCriteriaList

from cmpo.compat import cache_kwargs, distributed_backend, returned_cache, unwrapped_for_generation
from cmpo.engines.base import Generation, GenerationEngine, SamplingParams, cut_at_stop
from cmpo.engines.kv_cache import PrefixCache, left_padded, new_cache, repackable
from cmpo.engines.sampling import generation_config, logits_processors
from cmpo.engines.scheduler import TurnStops, run_turns


class TransformersEngine(GenerationEngine):
    """Batched sampling with ``transformers``' ``generate``.

    Args:
        model: the policy (possibly wrapped by accelerate: DDP, DeepSpeed, FSDP).
        tokenizer: its tokenizer (only ``pad_token_id`` is used).
        sampling: :class:`SamplingParams`; ``stop_token_ids`` must be set.
        accelerator: the trainer's ``Accelerator`` (``None`` for a bare model).
        max_batch_size: most prompts per ``generate`` call (longer batches are split; 0 = no limit).
        compaction: continue the rows still writing alone once at most half of a batch is (see
            :mod:`cmpo.engines.scheduler`); ``False`` computes every row until the batch's longest turn ends.
        join_turns: in :meth:`run_dialogues`, let the next turns of dialogues whose turn ended join
            the rows still writing (with ``compaction``); ``False``: one call per turn.
    """

    def __init__(self, model, tokenizer, sampling: SamplingParams, *, accelerator=None,
                 max_batch_size: int = 0, compaction: bool = True, join_turns: bool = True) -> None:
        if not sampling.stop_token_ids:
            raise ValueError("sampling.stop_token_ids is empty: an agent turn would never end; "
                             "use cmpo.engines.stop_token_ids_for(tokenizer)")
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.accelerator = accelerator
        self.max_batch_size = int(max_batch_size)
        self.compaction = bool(compaction)
        self.join_turns = bool(join_turns)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
        self.pad_token_id = int(pad)
        self._prefix: PrefixCache | None = None
        self._repack: bool | None = None  # known at the first call (from the model's cache layout)
        if accelerator is not None and accelerator.num_processes > 1:
            backend = distributed_backend(accelerator)  # sharded weights: each forward is collective
            self.collective = backend.is_zero3 or backend.is_fsdp

    @contextlib.contextmanager
    def _unwrapped(self):
        """The bare model, with its parameters whole: gathered under ZeRO-3, summoned under FSDP1
        (as TRL's GRPOTrainer does for transformers generation)."""
        if self.accelerator is None:
            yield self.model
            return
        with unwrapped_for_generation(self.model, self.accelerator) as bare:
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

    @contextlib.contextmanager
    def _eval_model(self):
        """The bare model (see :meth:`_unwrapped`) in eval mode, its training mode restored after."""
        with self._unwrapped() as model:
            was_training = model.training
            model.eval()
            try:
                yield model
            finally:
                model.train(was_training)

    def _generate_all(self, prompts: list[list[int]]) -> list[Generation]:
        size = self.max_batch_size or len(prompts)
        with self._eval_model() as model:
            if size >= len(prompts):
                out: dict[int, Generation] = {}
                self._turns(model, dict(enumerate(prompts)), lambda i, gen: out.__setitem__(i, gen), join=False)
                return [out[i] for i in range(len(prompts))]
            self._prefix = None
            # Similar lengths share a call, so that little compute goes to padding.
            chunked: list[Generation | None] = [None] * len(prompts)
            order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
            for start in range(0, len(order), size):
                chunk = order[start:start + size]
                gens = self._generate(model, [prompts[i] for i in chunk], None,
                                      [self.sampling.max_new_tokens] * len(chunk), keep=False)
                for i, gen in zip(chunk, gens):
                    chunked[i] = gen
            return chunked  # type: ignore[return-value]

    @torch.no_grad()
    def run_dialogues(self, prompts, on_turn) -> int:
        """As :meth:`GenerationEngine.run_dialogues`, but a dialogue whose turn has ended does not
        wait for the rows still writing: when a call ends (compaction, :mod:`cmpo.engines.scheduler`), the
        ended turns go to ``on_turn`` (env steps) and the dialogues' next turns join the rows still
        writing in the next call. Each call holds every dialogue waiting for a turn; a turn's
        tokens and log-probs are the same whichever calls computed them. Turn-synchronous (the
        base class) for collective engines, ``compaction=False``, ``max_batch_size`` or caches that
        are not full-attention."""
        if self.collective or not (self.compaction and self.join_turns) or self.max_batch_size or not prompts:
            return super().run_dialogues(prompts, on_turn)
        with self._eval_model() as model:
            if self._repack is None:
                self._repack = repackable(model)
            if self._repack:
                self._prefix = None
                return self._turns(model, prompts, on_turn, join=True)
        return super().run_dialogues(prompts, on_turn)

    def _turns(self, model, prompts: dict, on_turn, *, join: bool) -> int:
        """:func:`~cmpo.engines.scheduler.run_turns` with this engine's ``generate`` calls: a call
        continues the rows of the previous one from its cache (only new tokens are fed); repeated
        first prompts (a group's G copies) are prefilled once; with compaction a call ends once at
        most half of its rows are still writing. Returns the number of ``generate`` calls."""
        if self._repack is None:
            self._repack = repackable(model)
        compact = self.compaction and self._repack and not self.collective  # collective: same calls everywhere
        store = self._prefix
        if store is None or store.match(list(prompts.values())) is None:
            store = PrefixCache.shared(model, list(prompts.values()), self.pad_token_id, self._repack)
        turn_store = PrefixCache(self._repack)  # without join: every call, for the next turn

        def call(batch: list[list[int]], budgets: list[int]) -> list[Generation]:
            nonlocal store
            picks = store.match(batch) if store is not None else None
            if join and picks is not None:
                picks = store.prefill_new_turns(model, picks, batch)
            past = store.take(picks, batch) if picks is not None else None  # None: prefill
            # With join, every row of the next call is a row of this one: keep this call's cache only.
            self._prefix = PrefixCache(self._repack) if join else turn_store
            gens = self._generate(model, batch, past, budgets, compact=compact)
            store = self._prefix
            return gens

        return run_turns(prompts, on_turn, call, limit=self.sampling.max_new_tokens, join=join)

    def sync_weights(self) -> None:
        """The weights changed: cached keys and values are stale."""
        self._prefix = None

    def clear_cache(self) -> None:
        self._prefix = None

    def _generate(self, model, prompts: list[list[int]], past, budgets: list[int], *,
                  keep: bool = True, compact: bool = False) -> list[Generation]:
        """One ``generate`` call in which row i samples at most ``budgets[i]`` tokens. With ``past``
        (from :meth:`PrefixCache.take`), prompt i continues row i of that cache and only its new
        tokens are fed (left-padded after the cached columns). ``keep``: add the call's cache to the
        store. ``compact``: end the call once at most half of the rows are still writing."""
        device = next(model.parameters()).device
        cache, past_ids, past_mask = None, None, None
        if past is not None:
            cache, past_ids, past_mask, prompts_new = past
        else:
            prompts_new = prompts
        new_ids, new_mask = left_padded(prompts_new, self.pad_token_id)
        input_ids = new_ids if past_ids is None else torch.cat([past_ids, new_ids], dim=1)
        attention_mask = new_mask if past_mask is None else torch.cat([past_mask, new_mask], dim=1)
        if cache is None:
            cache = new_cache(model.config)
        processors, recorder = logits_processors(self.sampling)
        config = generation_config(self.sampling, self.pad_token_id)
        config.max_new_tokens = max(budgets)
        stopping = StoppingCriteriaList()
        if (compact and len(prompts) > 1) or min(budgets) < max(budgets):
            stopping.append(TurnStops(self.sampling.stop_token_ids, budgets, compact=compact))
        out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                             generation_config=config, logits_processor=processors,
                             stopping_criteria=stopping, **cache_kwargs(cache))
        generated = out.sequences[:, input_ids.shape[1]:]
        logprobs = recorder.finish(generated).cpu().tolist()
        gens = [cut_at_stop(ids[:budget], lps[:budget], self.sampling.stop_token_ids)
                for ids, lps, budget in zip(generated.cpu().tolist(), logprobs, budgets)]
        if keep and self._prefix is not None and not self._prefix.add_call(
                returned_cache(out), out.sequences.cpu(), attention_mask, gens):
            self._prefix = None
        return gens
