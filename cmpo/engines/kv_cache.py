"""The transformers engine's key/value caches: in-place appends and prefix reuse across turns.

This is the code most exposed to transformers upgrades: it subclasses ``DynamicLayer`` and rebuilds
``DynamicCache`` layers, both resolved through :mod:`cmpo.compat`.

Appending in place: transformers' ``DynamicCache`` grows each layer's keys and values with
``torch.cat``, which copies the whole cache at every decode step (O(length) per token, O(length²)
per turn); at dialogue lengths that copy, not the model, took most of a CPU rollout's time. The
engine's caches hold full-attention layers as :class:`GrowingLayer`, which writes each step into a
buffer with spare room (grown by half when full): amortised O(1) per token.

Prefix reuse (:class:`PrefixCache`): the keys and values a turn's ``generate`` calls computed are
kept, and when every prompt of the next call extends a dialogue of the previous turn (the next turn
of the same dialogues, as the rollout collector asks), only the new tokens are fed: each turn costs
the prefill of its user reply, not of the whole dialogue (vLLM's prefix caching plays this part on
GPUs). Each row's cached tokens are moved to the right end of the new batch's cache, so the padding
earlier turns left between them is dropped (no attention goes to it). Repeated prompts (the G
copies of a group's opening) are prefilled once.
"""

from __future__ import annotations

from typing import Any

import torch

from cmpo.compat import cache_classes, cache_kwargs
from cmpo.engines.base import Generation

DynamicCache, DynamicLayer = cache_classes()


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


def left_padded(rows: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` as a left-padded batch (every row ends at the same column): ids and attention mask."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[r, width - len(row):] = 1
    return ids, mask


def feed(model, kv, new_ids: torch.Tensor, mask: torch.Tensor) -> None:
    """Prefill: run ``new_ids`` (the last columns of ``mask``, which also covers what ``kv`` holds)
    through the model into ``kv``. Positions count real tokens only (left padding)."""
    device = next(model.parameters()).device
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -new_ids.shape[1]:]
    model(input_ids=new_ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
          use_cache=True, logits_to_keep=1, **cache_kwargs(kv))


def new_cache(config=None) -> DynamicCache:
    """A ``DynamicCache`` (laid out from ``config`` when given) whose full-attention layers are
    :class:`GrowingLayer`; sliding-window and other layer types are kept as transformers makes them."""
    cache = DynamicCache(config=config)
    if cache.layer_class_to_replicate is DynamicLayer:
        cache.layer_class_to_replicate = GrowingLayer
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def repackable(model) -> bool:
    """Whether every layer of the model's cache holds all positions (full attention), so that the
    prefix cache may move each row's tokens (see :class:`PrefixCache`)."""
    layers = getattr(DynamicCache(config=model.config), "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class PrefixCache:
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
    def shared(cls, model, prompts: list[list[int]], pad_token_id: int, repack: bool) -> "PrefixCache | None":
        """When prompts repeat (a group's G copies of one opening), prefill each distinct prompt
        but its last token once; ``None`` when none repeats."""
        distinct = list(dict.fromkeys(tuple(p) for p in prompts))
        if len(distinct) == len(prompts) or min(len(p) for p in distinct) < 2:
            return None
        ids, mask = left_padded([p[:-1] for p in distinct], pad_token_id)
        kv = new_cache(model.config)
        feed(model, kv, ids, mask)
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
        new_ids, new_mask = left_padded([tokens[:-1] for tokens in new], 0)  # after the cached columns
        ids, mask = torch.cat([ids, new_ids], dim=1), torch.cat([mask, new_mask], dim=1)
        feed(model, kv, new_ids, mask)
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
