"""The transformers engine's dialogue scheduler: which rows go into each ``generate`` call.

Compaction and joining: ``generate`` computes every row until the last one stops, so when a turn's
rows end at different lengths most of the work can go to rows that have already finished. Once at
most half of a call's rows are still writing (:class:`TurnStops`), the engine ends the call and
continues those rows, from the cache, in a new one. In a rollout (:func:`run_turns` with ``join``)
the dialogues whose turns ended meanwhile get their env steps and join that call with their next
turns, so a batch's turns do not wait for its longest one. Not under ZeRO-3/FSDP, where every
process must make the same calls, nor for caches that are not full-attention: there each turn is
one call (the base engine's ``run_dialogues``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria

from cmpo.engines.base import Generation

#: ``call(prompts, budgets)``: one ``generate`` call in which row i continues ``prompts[i]`` (its
#: turn's prompt and the tokens it sampled so far) with at most ``budgets[i]`` more tokens.
GenerateCall = Callable[[list[list[int]], list[int]], list[Generation]]


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
class Turn:
    """A dialogue's turn in progress: its prompt and what has been sampled of the turn so far."""

    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


def run_turns(prompts: dict[Hashable, list[int]], on_turn, call: GenerateCall, *, limit: int,
              join: bool) -> int:
    """Sample a turn of at most ``limit`` tokens for every prompt, in ``call``s until each has
    ended (a stop token or ``limit`` tokens). Each ended turn goes to ``on_turn(key, generation)``;
    with ``join``, its return (``None``: the dialogue is over) is the dialogue's next prompt, sampled
    in the next call with the rows still writing. Returns the number of calls."""
    rows = {key: Turn(prompt) for key, prompt in prompts.items()}  # prompts are read, never changed
    calls = 0
    while rows:
        keys = list(rows)
        gens = call([rows[k].prompt + rows[k].tokens for k in keys], [limit - len(rows[k].tokens) for k in keys])
        calls += 1
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
                rows[key] = Turn(following)
    return calls
