"""Transformers rollout engine: batched ``model.generate`` with left padding (CPU and GPU).

The engine samples from the training model itself (no copy, nothing to sync). Under DeepSpeed
ZeRO-3 or FSDP the parameters are gathered for generation the way TRL's GRPOTrainer does it
(``unwrap_model_for_generation``, FSDP ``summon_full_params``).

Prefix reuse: the keys and values a turn's ``generate`` calls computed are kept, and when every
prompt of the next call extends a dialogue of the previous turn (the next turn of the same
dialogues, as the rollout collector asks), only the new tokens are fed: each turn costs the
prefill of its user reply, not of the whole dialogue (vLLM's prefix caching plays this part on
GPUs). Each row's cached tokens are moved to the right end of the new batch's cache, so the
padding earlier turns left between them is dropped (no attention goes to it). Any other call, or
``sync_weights`` (new weights), starts afresh; repeated prompts (the G copies of a group's opening)
are prefilled once. Batches split by ``max_batch_size`` are not reused.

Appending in place: transformers' ``DynamicCache`` grows each layer's keys and values with
``torch.cat``, which copies the whole cache at every decode step (O(length) per token, O(length²)
per turn); at dialogue lengths that copy, not the model, took most of a CPU rollout's time. The
engine's caches hold full-attention layers as :class:`GrowingLayer`, which writes each step into a
buffer with spare room (grown by half when full): amortised O(1) per token.

Compaction and joining: ``generate`` computes every row until the last one stops, so when a
turn's rows end at different lengths most of the work can go to rows that have already finished.
Once at most half of a call's rows are still writing (:class:`TurnStops`), the engine ends the call
and continues those rows, from the cache, in a new one. In a rollout (:meth:`run_dialogues`) the
dialogues whose turns ended meanwhile get their env steps and join that call with their next
turns, so a batch's turns do not wait for its longest one. Not under ZeRO-3/FSDP, where every
process must make the same calls, nor for caches that are not full-attention: there each turn is
one call (the base class).

Log-probabilities: temperature, top-k and top-p are applied by logits processors that this engine
passes to ``generate`` (the generation config itself asks for plain sampling), followed by
:class:`SampledLogprobRecorder`, which therefore sees the final sampling distribution of each step
and records the log-probability of the token drawn from it. Memory stays at one ``batch x vocab``
row per step instead of the ``steps x batch x vocab`` of ``output_scores=True``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.cache_utils import DynamicLayer
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
        compaction: continue the rows still writing alone once at most half of a batch is (see the
            module docstring); ``False`` computes every row until the batch's longest turn ends.
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
        self._prefix: _PrefixCache | None = None
        self._repack: bool | None = None  # known at the first call (from the model's cache layout)
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
        off = {} if self.sampling.greedy else {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
        return GenerationConfig(max_new_tokens=self.sampling.max_new_tokens,
                                do_sample=not self.sampling.greedy, **off,
                                eos_token_id=list(self.sampling.stop_token_ids),
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
                self._rows(model, dict(enumerate(prompts)), lambda i, gen: out.__setitem__(i, gen), join=False)
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
        wait for the rows still writing: when a call ends (compaction, module docstring), the
        ended turns go to ``on_turn`` (env steps) and the dialogues' next turns join the rows still
        writing in the next call. Each call holds every dialogue waiting for a turn; a turn's
        tokens and log-probs are the same whichever calls computed them. Turn-synchronous (the
        base class) for collective engines, ``compaction=False``, ``max_batch_size`` or caches that
        are not full-attention."""
        if self.collective or not (self.compaction and self.join_turns) or self.max_batch_size or not prompts:
            return super().run_dialogues(prompts, on_turn)
        with self._eval_model() as model:
            if self._repack is None:
                self._repack = _repackable(model)
            if self._repack:
                self._prefix = None
                return self._rows(model, prompts, on_turn, join=True)
        return super().run_dialogues(prompts, on_turn)

    def _rows(self, model, prompts: dict, on_turn, *, join: bool) -> int:
        """Sample a turn for every prompt; each ended turn goes to ``on_turn(key, generation)``,
        whose return (with ``join``) is the dialogue's next prompt, sampled in the next call with
        the rows still writing. A call continues the rows of the previous one from its cache
        (only new tokens are fed); repeated first prompts (a group's G copies) are prefilled once.
        With compaction a call ends once at most half of its rows are still writing. Returns the
        number of ``generate`` calls."""
        if self._repack is None:
            self._repack = _repackable(model)
        compact = self.compaction and self._repack and not self.collective  # collective: same calls everywhere
        limit = self.sampling.max_new_tokens
        store = self._prefix
        if store is None or store.match(list(prompts.values())) is None:
            store = _PrefixCache.shared(model, list(prompts.values()), self.pad_token_id, self._repack)
        rows = {key: _Turn(prompt) for key, prompt in prompts.items()}  # prompts are read, never changed
        turn_store = _PrefixCache(self._repack)  # without join: every call, for the next turn
        calls = 0
        while rows:
            keys = list(rows)
            batch = [rows[k].prompt + rows[k].tokens for k in keys]
            picks = store.match(batch) if store is not None else None
            if join and picks is not None:
                picks = store.prefill_new_turns(model, picks, batch)
            past = store.take(picks, batch) if picks is not None else None  # None: prefill
            # With join, every row of the next call is a row of this one: keep this call's cache only.
            self._prefix = _PrefixCache(self._repack) if join else turn_store
            gens = self._generate(model, batch, past, [limit - len(rows[k].tokens) for k in keys],
                                  compact=compact)
            calls += 1
            store = self._prefix
            ended = []
            for key, gen in zip(keys, gens):
                turn = rows[key]
                turn.tokens += gen.token_ids
                turn.logprobs += gen.logprobs
                if gen.finish_reason == "stop" or len(turn.tokens) >= limit:
                    ended.append((key, Generation(turn.tokens, turn.logprobs, gen.finish_reason)))
            for key, gen in ended:
                del rows[key]
                following = on_turn(key, gen)
                if join and following is not None:
                    rows[key] = _Turn(following)
        return calls

    def sync_weights(self) -> None:
        """The weights changed: cached keys and values are stale."""
        self._prefix = None

    def clear_cache(self) -> None:
        self._prefix = None

    def _generate(self, model, prompts: list[list[int]], past, budgets: list[int], *,
                  keep: bool = True, compact: bool = False) -> list[Generation]:
        """One ``generate`` call in which row i samples at most ``budgets[i]`` tokens. With ``past``
        (from :meth:`_PrefixCache.take`), prompt i continues row i of that cache and only its new
        tokens are fed (left-padded after the cached columns). ``keep``: add the call's cache to the
        store. ``compact``: end the call once at most half of the rows are still writing."""
        device = next(model.parameters()).device
        cache, past_ids, past_mask = None, None, None
        if past is not None:
            cache, past_ids, past_mask, prompts_new = past
        else:
            prompts_new = prompts
        new_ids, new_mask = _left_padded(prompts_new, self.pad_token_id)
        input_ids = new_ids if past_ids is None else torch.cat([past_ids, new_ids], dim=1)
        attention_mask = new_mask if past_mask is None else torch.cat([past_mask, new_mask], dim=1)
        if cache is None:
            cache = new_cache(model.config)
        processors, recorder = self._processors()
        config = self._generation_config()
        config.max_new_tokens = max(budgets)
        stopping = StoppingCriteriaList()
        if (compact and len(prompts) > 1) or min(budgets) < max(budgets):
            stopping.append(TurnStops(self.sampling.stop_token_ids, budgets, compact=compact))
        out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                             past_key_values=cache, generation_config=config,
                             logits_processor=processors, stopping_criteria=stopping)
        generated = out.sequences[:, input_ids.shape[1]:]
        logprobs = recorder.finish(generated).cpu().tolist()
        gens = [cut_at_stop(ids[:budget], lps[:budget], self.sampling.stop_token_ids)
                for ids, lps, budget in zip(generated.cpu().tolist(), logprobs, budgets)]
        if keep and self._prefix is not None and not self._prefix.add_call(
                out.past_key_values, out.sequences.cpu(), attention_mask, gens):
            self._prefix = None
        return gens


class TurnStops(StoppingCriteria):
    """Per-row and whole-call ends of a ``generate`` call. Row i is done once it has sampled a stop
    token or ``budgets[i]`` tokens (rows continuing a turn have less budget left than new ones).
    With ``compact``, the whole call ends once at most half of its rows are still writing and
    ``min_left`` or more steps of the largest budget remain: ``generate`` keeps computing a finished
    row (it appends padding) until every row is done, so on a batch whose turns end at different
    lengths most of the compute would go to finished rows; the engine instead continues the
    unfinished rows in a new call (with the next turns of the finished ones, when it may)."""

    def __init__(self, stop_token_ids: tuple[int, ...], budgets: list[int], *, compact: bool,
                 min_left: int = 4) -> None:
        self.stop_token_ids = torch.tensor(stop_token_ids, dtype=torch.long)
        self.budgets, self.largest = torch.tensor(budgets, dtype=torch.long), max(budgets)
        self.finished = torch.zeros(len(budgets), dtype=torch.bool)
        self.compact, self.min_left, self.steps = compact, min_left, 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.steps += 1
        device = input_ids.device
        spent = self.budgets.to(device) <= self.steps
        self.finished = self.finished.to(device) | spent | torch.isin(input_ids[:, -1], self.stop_token_ids.to(device))
        writing = int((~self.finished).sum())
        sparse = (self.compact and 0 < 2 * writing <= len(self.finished)
                  and self.largest - self.steps >= self.min_left)
        return torch.full_like(self.finished, True) if sparse else spent


@dataclass
class _Turn:
    """A dialogue's turn in progress: its prompt and what has been sampled of the turn so far."""

    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


class GrowingLayer(DynamicLayer):
    """A full-attention cache layer that appends in place. ``DynamicLayer`` concatenates, copying
    every cached position at each step; this layer keeps keys and values in buffers with spare room
    and exposes ``keys``/``values`` as views of their first ``length`` positions, so a step copies
    only its new positions. When full, a buffer grows to ``length + max(64, length // 2)``: the
    copies add up to O(1) per token. Anything that replaces ``keys`` (``batch_select_indices``,
    ``crop``, ``reorder_cache``, offloading) is honoured: the next update starts a new buffer from it.
    """

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer = self._value_buffer = self._keys_view = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length, new = self.get_seq_length(), key_states.shape[-2]
        buffer = self._key_buffer
        if (self.keys is not self._keys_view or buffer is None or length + new > buffer.shape[-2]
                or buffer.shape[:2] != key_states.shape[:2]):
            self._grow(key_states, value_states, length, length + new + max(64, (length + new) // 2))
        self._key_buffer[..., length:length + new, :].copy_(key_states)
        self._value_buffer[..., length:length + new, :].copy_(value_states)
        self.keys = self._keys_view = self._key_buffer[..., :length + new, :]
        self.values = self._value_buffer[..., :length + new, :]
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, length: int, capacity: int) -> None:
        keys = key_states.new_empty((*key_states.shape[:2], capacity, key_states.shape[-1]))
        values = value_states.new_empty((*value_states.shape[:2], capacity, value_states.shape[-1]))
        if length:
            keys[..., :length, :].copy_(self.keys)
            values[..., :length, :].copy_(self.values)
        self._key_buffer, self._value_buffer = keys, values


def _left_padded(rows: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` as a left-padded batch (every row ends at the same column): ids and attention mask."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[r, width - len(row):] = 1
    return ids, mask


def _feed(model, kv, new_ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Prefill: run ``new_ids`` (the last columns of ``mask``, which also covers what ``kv`` holds)
    through the model into ``kv``. Positions count real tokens only (left padding)."""
    device = next(model.parameters()).device
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -new_ids.shape[1]:]
    model(input_ids=new_ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
          past_key_values=kv, use_cache=True, logits_to_keep=1)


def new_cache(config=None) -> DynamicCache:
    """A ``DynamicCache`` (laid out from ``config`` when given) whose full-attention layers are
    :class:`GrowingLayer`; sliding-window and other layer types are kept as transformers makes them."""
    cache = DynamicCache(config=config)
    if cache.layer_class_to_replicate is DynamicLayer:
        cache.layer_class_to_replicate = GrowingLayer
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def _repackable(model) -> bool:
    """Whether every layer of the model's cache holds all positions (full attention), so that the
    prefix cache may move each row's tokens (see :class:`_PrefixCache`)."""
    layers = getattr(DynamicCache(config=model.config), "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class _PrefixCache:
    """The keys and values that the ``generate`` calls of the last turn left, so that the next call
    feeds only the new tokens of the dialogues it continues (what vLLM's prefix caching does).

    Each call adds a *segment*: its cache, with ``ids[r, j]`` the token in column j of row r and
    ``mask[r, j] = 1`` when that token belongs to the row's dialogue (0 for padding and for the pads
    ``generate`` appends to a row after its stop token). A dialogue is known by its tokens (its
    unmasked ids). :meth:`take` builds the cache of a new batch: rows of one segment are taken as
    they are (columns that are padding in every row dropped); rows of several segments (after a
    compacted turn) need ``repack`` (full-attention caches): each row's tokens are moved to the right
    end of the new cache, which also drops the padding between them. Moving every row each turn
    would save a little attention on padding but costs more than it saves on a CPU (measured).
    """

    def __init__(self, repack: bool) -> None:
        self.repack = repack
        self.segments: list[tuple[Any, torch.Tensor, torch.Tensor]] = []
        self.rows: dict[tuple[int, ...], tuple[int, int, int]] = {}  # tokens -> (segment, row, length)
        self.lengths: list[int] = []

    def add(self, kv, ids: torch.Tensor, mask: torch.Tensor) -> None:
        segment = len(self.segments)
        self.segments.append((kv, ids, mask))
        for r, (row, m) in enumerate(zip(ids, mask)):
            tokens = tuple(row[m.bool()].tolist())
            self.rows.setdefault(tokens, (segment, r, len(tokens)))
        self.lengths = sorted({n for _, _, n in self.rows.values()})

    def add_call(self, kv, sequences: torch.Tensor, attention_mask: torch.Tensor, gens: list[Generation]) -> bool:
        """Add what a ``generate`` call left; False if its cache is not the expected one column
        short of ``sequences`` (the last sampled token is never fed)."""
        width = attention_mask.shape[1]
        length = kv.get_seq_length()
        if length != sequences.shape[1] - 1:
            return False
        produced = torch.zeros((len(gens), sequences.shape[1] - width), dtype=torch.long)
        for r, gen in enumerate(gens):
            produced[r, :len(gen.token_ids)] = 1
        mask = torch.cat([attention_mask.cpu(), produced], dim=1)[:, :length]
        self.add(kv, sequences[:, :length], mask)
        return True

    @classmethod
    def shared(cls, model, prompts: list[list[int]], pad_token_id: int, repack: bool) -> "_PrefixCache | None":
        """When prompts repeat (a group's G copies of one opening), prefill each distinct prompt
        but its last token once; ``None`` when none repeats."""
        distinct = list(dict.fromkeys(tuple(p) for p in prompts))
        if len(distinct) == len(prompts) or min(len(p) for p in distinct) < 2:
            return None
        ids, mask = _left_padded([p[:-1] for p in distinct], pad_token_id)
        kv = new_cache(model.config)
        _feed(model, kv, ids, mask)
        store = cls(repack)
        store.add(kv, ids, mask)
        return store

    def prefill_new_turns(self, model, picks, prompts):
        """When a batch mixes rows continuing a turn (one new token) with next turns (a user reply
        to feed), feed the replies (all but their last token) in a forward of their rows alone, so
        that the ``generate`` call that follows does not pad every continuing row to the longest
        reply. Returns the picks to take the batch from (this store's, with the replies added)."""
        fresh = [i for i, (prompt, (_, _, n)) in enumerate(zip(prompts, picks)) if len(prompt) - n > 1]
        if not fresh or len(fresh) == len(prompts) or not self.repack:
            return picks
        kv, ids, mask, new = self.take([picks[i] for i in fresh], [prompts[i] for i in fresh])
        new_ids, new_mask = _left_padded([tokens[:-1] for tokens in new], 0)  # after the cached columns
        ids, mask = torch.cat([ids, new_ids], dim=1), torch.cat([mask, new_mask], dim=1)
        _feed(model, kv, new_ids, mask)
        self.add(kv, ids, mask)
        return self.match(prompts)

    def match(self, prompts: list[list[int]]) -> list[tuple[int, int, int]] | None:
        """For each prompt, the longest cached dialogue it extends, else None."""
        picks = []
        for prompt in prompts:
            pick = next((self.rows[key] for n in reversed(self.lengths) if n < len(prompt)
                         and (key := tuple(prompt[:n])) in self.rows), None)
            if pick is None:
                return None
            picks.append(pick)
        if not self.repack and len({s for s, _, _ in picks}) > 1:
            return None
        return picks

    def take(self, picks: list[tuple[int, int, int]], prompts: list[list[int]]):
        """The cache of a batch whose row i continues ``picks[i]``: (cache, ids, mask, the prompts'
        new tokens)."""
        new = [prompt[n:] for prompt, (_, _, n) in zip(prompts, picks)]
        segments = {s for s, _, _ in picks}
        if len(segments) == 1:  # rows of one segment, in place (cheaper than moving their tokens)
            kv, ids, mask = self.segments[picks[0][0]]
            index = torch.tensor([r for _, r, _ in picks], dtype=torch.long)
            ids, mask = ids[index], mask[index]
            if not self.repack:  # the segment is used up
                kv.batch_select_indices(index.to(kv.layers[0].keys.device) if hasattr(kv, "layers") else index)
                return kv, ids, mask, new
            lead = int(mask.any(0).long().argmax())  # columns before it are padding in every row
            cache = new_cache()
            for li, layer in enumerate(kv.layers):  # the segment stays whole: later calls may need it
                index = index.to(layer.keys.device)
                cache.update(layer.keys.index_select(0, index)[:, :, lead:],
                             layer.values.index_select(0, index)[:, :, lead:], li)
            return cache, ids[:, lead:], mask[:, lead:], new
        width = max(n for _, _, n in picks)
        ids = torch.zeros((len(picks), width), dtype=torch.long)
        mask = torch.zeros((len(picks), width), dtype=torch.long)
        parts, order = [], []
        for segment in sorted(segments):
            kv, seg_ids, seg_mask = self.segments[segment]
            where = [i for i, (s, _, _) in enumerate(picks) if s == segment]
            columns = torch.zeros((len(where), width), dtype=torch.long)  # 0: a masked placeholder
            for k, i in enumerate(where):
                real = seg_mask[picks[i][1]].nonzero().squeeze(1)
                columns[k, width - len(real):] = real
                ids[i, width - len(real):] = seg_ids[picks[i][1], real]
                mask[i, width - len(real):] = 1
            device = kv.layers[0].keys.device
            rows = torch.tensor([picks[i][1] for i in where], device=device)[:, None]
            columns = columns.to(device)
            # (rows, :, columns) indexing puts the row and column dims first: (n, width, heads, dim)
            parts.append([(layer.keys[rows, :, columns].transpose(1, 2),
                           layer.values[rows, :, columns].transpose(1, 2)) for layer in kv.layers])
            order += where
        cache = new_cache()
        for li in range(len(parts[0])):
            keys, values = (torch.cat([part[li][t] for part in parts]) for t in (0, 1))
            if order != sorted(order):  # rows from several segments: back to the batch's order
                inverse = torch.tensor(order, device=keys.device).argsort()
                keys, values = keys[inverse], values[inverse]
            cache.update(keys, values, li)
        return cache, ids, mask, new
