"""Multi-turn rollouts of an LLM policy against any Gymnasium text env (SPEC 3 and 8.5).

A *group* is G episodes reset with the same seed (same scenario and user). All groups of a step
run together through the engine's ``run_dialogues``: every dialogue waiting for an agent turn goes
into **one** batched generation call, the envs of the turns that ended step between calls, and
their dialogues' next turns go into the next call. The base engine (vLLM, multi-process sharded
models) makes one call per turn; the transformers engine ends a call once at most half of its rows
are still writing and lets the next turns of the others join those rows, so that short turns do
not wait for the longest one of the batch.

Tokens, not text, are the record. A dialogue's token sequence is built incrementally:

* the chat template is applied **once**, to the opening messages (``add_generation_prompt=True``);
* the engine's sampled ids are appended as they are (the end-of-turn token included);
* the env's reply is appended as the *template delta* of its new messages (:class:`ChatDelta`).

So the trainer scores exactly the tokens that were sampled: agent tokens are never decoded and
re-tokenised. Their text is decoded only to be sent to the env.

The template delta of new messages ``M`` is what the template adds after an agent turn's
end-of-turn token when ``M`` and the generation prompt follow it::

    delta(M) = ids(template(D + M, add_generation_prompt=True))[len(ids(template(D))) cut after
               its last end-of-turn token:]

with a fixed dummy dialogue ``D`` (system, user, assistant). For ChatML (Qwen2.5) this is
``"\\n<|im_start|>user\\n{content}<|im_end|>\\n<|im_start|>assistant\\n"``. For a template that
renders earlier messages independently of later ones (ChatML, Llama 3; TRL's
``is_chat_template_prefix_preserving``) and agent ids that are the canonical tokenisation of their
text, the incremental sequence equals the template applied to the whole dialogue; the tests check
this. Where a template rewrites history (e.g. Qwen3 dropping earlier ``<think>`` blocks) the
incremental sequence is still exactly what the policy saw when it sampled each turn, which is what
the loss needs.

A turn cut by ``max_new_tokens`` (no end-of-turn token) is closed with the template's end-of-turn
token, added as a context token (not sampled, outside the loss mask), so that the next user turn is
rendered as usual.

Rewards: the *outcome* is the episode's return (the sum of env rewards; for FDS, the terminal
reward); the per-turn cost is ``info["cost"]``; the per-turn process reward is
``info["process_reward"]`` when the env reports it. An episode whose next prompt would not fit in
``max_seq_len`` tokens ends there (``termination_reason="context_length"``, truncated).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from cmpo.engines.base import Generation, GenerationEngine

_DUMMY = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
          {"role": "assistant", "content": "A"}]


def _template_ids(tokenizer, messages, *, add_generation_prompt: bool, chat_template=None) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                              tokenize=True, return_dict=False,
                                              chat_template=chat_template))


class ChatDelta:
    """Renders a dialogue's tokens with the chat template, incrementally (see the module docstring).

    Args:
        tokenizer: a chat tokenizer.
        stop_token_ids: the end-of-turn ids the engine stops at.
        chat_template: overrides ``tokenizer.chat_template`` when given.
    """

    def __init__(self, tokenizer, stop_token_ids: tuple[int, ...], chat_template: str | None = None):
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.stop_token_ids = tuple(stop_token_ids)
        try:
            self._dummy = _DUMMY
            prefix = self._render(_DUMMY, add_generation_prompt=False)
        except Exception:  # templates without a system role (e.g. Gemma)
            self._dummy = _DUMMY[1:]
            prefix = self._render(self._dummy, add_generation_prompt=False)
        ends = [i for i, t in enumerate(prefix) if t in set(self.stop_token_ids)]
        if not ends:
            raise ValueError("the chat template closes an assistant message with none of the stop "
                             f"tokens {list(self.stop_token_ids)}; set the engine's stop tokens to the "
                             "template's end-of-turn token")
        #: The template's end-of-turn token after an assistant message.
        self.end_of_turn_id = prefix[ends[-1]]
        self._prefix = prefix[: ends[-1] + 1]

    def _render(self, messages, *, add_generation_prompt: bool) -> list[int]:
        return _template_ids(self.tokenizer, messages, add_generation_prompt=add_generation_prompt,
                             chat_template=self.chat_template)

    def opening(self, messages: list[dict[str, str]]) -> list[int]:
        """Template ids of the opening messages followed by the generation prompt."""
        return self._render(messages, add_generation_prompt=True)

    def delta(self, new_messages: list[dict[str, str]]) -> list[int]:
        """Ids that follow an agent turn's end-of-turn token: ``new_messages`` + generation prompt."""
        full = self._render(self._dummy + list(new_messages), add_generation_prompt=True)
        if full[: len(self._prefix)] != self._prefix:
            raise ValueError("the chat template does not render a dialogue's earlier messages the same "
                             "way once more messages follow; incremental rendering needs a "
                             "prefix-preserving template (see trl.chat_template_utils)")
        return full[len(self._prefix):]


@dataclass
class Episode:
    """One dialogue as the trainer sees it.

    ``token_ids`` is the whole dialogue (opening prompt, then agent turns and env turns);
    ``logprobs[j]`` is the sampling log-prob of ``token_ids[j]`` inside an agent turn and 0.0
    elsewhere; ``turn_spans[t] = (start, end)`` are the positions of agent turn t's sampled tokens.
    Per-turn lists (``turn_costs``, ``process_rewards``, ``rewards``, ``finish_reasons``,
    ``format_ok``) have one entry per agent turn.
    """

    group: int
    seed: int
    token_ids: list[int]
    logprobs: list[float]
    prompt_length: int
    turn_spans: list[tuple[int, int]] = field(default_factory=list)
    turn_costs: list[float] = field(default_factory=list)
    process_rewards: list[float | None] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    format_ok: list[bool] = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False
    termination_reason: str | None = None
    final_info: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)

    @property
    def num_turns(self) -> int:
        return len(self.turn_spans)

    @property
    def outcome(self) -> float:
        """R_i: the episode's return (for FDS, the terminal reward)."""
        return float(sum(self.rewards))

    @property
    def finished(self) -> bool:
        """Every agent turn followed the protocol (``info["format_ok"]``): the paper's "finished"."""
        return all(self.format_ok)

    @property
    def session_cost(self) -> float:
        """C_i = sum of the per-turn costs."""
        return float(sum(self.turn_costs))

    @property
    def num_generated_tokens(self) -> int:
        return sum(end - start for start, end in self.turn_spans)

    def agent_mask(self) -> list[int]:
        """1 on the sampled tokens of every agent turn, 0 elsewhere (the loss mask)."""
        mask = [0] * len(self.token_ids)
        for start, end in self.turn_spans:
            mask[start:end] = [1] * (end - start)
        return mask


def set_unfinished_outcome(episodes: list[Episode], outcome: float) -> int:
    """Give every unfinished episode (a turn broke the protocol) the outcome R_i = ``outcome``:
    its per-turn rewards become 0, then ``outcome`` on the last turn. Returns how many changed.

    A malformed turn issues no voucher and so costs nothing: without this, a cost penalty λ·c
    pays the policy to garble its costly turn (the paper counts such a session as unfinished)."""
    changed = 0
    for ep in episodes:
        if ep.rewards and not ep.finished:
            ep.rewards = [0.0] * (len(ep.rewards) - 1) + [float(outcome)]
            changed += 1
    return changed


@dataclass
class RolloutStats:
    """Wall time of the last :meth:`RolloutCollector.collect`, split by where it went."""

    generation_s: float = 0.0
    env_s: float = 0.0
    total_s: float = 0.0
    generation_calls: int = 0
    generated_tokens: int = 0


class RolloutCollector:
    """Runs groups of G episodes of ``env_id`` with an engine (see the module docstring).

    Args:
        env_id: any registered Gymnasium text env (``gym.make(env_id, **env_kwargs)``).
        engine: a :class:`~cmpo.engines.GenerationEngine`.
        tokenizer: the policy's chat tokenizer.
        group_size: G, episodes per reset seed.
        env_kwargs: passed to ``gym.make``.
        max_turns: optional cap on agent turns per episode (the env's own limit applies anyway).
        max_seq_len: most tokens a dialogue may reach, generation included (``None`` = no cap).
        chat_template: overrides the tokenizer's template.
    """

    def __init__(self, env_id: str, engine: GenerationEngine, tokenizer, *, group_size: int,
                 env_kwargs: dict[str, Any] | None = None, max_turns: int | None = None,
                 max_seq_len: int | None = None, chat_template: str | None = None) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.env_id = env_id
        self.engine = engine
        self.tokenizer = tokenizer
        self.group_size = group_size
        self.env_kwargs = dict(env_kwargs or {})
        self.max_turns = max_turns
        self.max_seq_len = max_seq_len
        self.chat = ChatDelta(tokenizer, engine.sampling.stop_token_ids, chat_template)
        self.envs: list[gym.Env] = []
        self.stats = RolloutStats()

    def _env(self, i: int) -> gym.Env:
        while len(self.envs) <= i:
            self.envs.append(gym.make(self.env_id, **self.env_kwargs))
        return self.envs[i]

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []

    def collect(self, seeds: list[int], options: list[dict[str, Any] | None] | None = None) -> list[Episode]:
        """One group of G episodes per reset seed; episodes of a group are contiguous.
        ``options``: the ``reset`` options of each group (e.g. ``{"user_index": u}``), else none."""
        if options is not None and len(options) != len(seeds):
            raise ValueError(f"options must give one entry per seed ({len(seeds)}), got {len(options)}")
        start_time = time.perf_counter()
        self.stats = RolloutStats()
        episodes: list[Episode] = []
        envs: list[gym.Env] = []
        opened = None  # (messages, ids) of the last opening rendered: a group's episodes share it
        for g, seed in enumerate(seeds):
            for _ in range(self.group_size):
                env = self._env(len(envs))
                t0 = time.perf_counter()
                obs, info = env.reset(seed=int(seed), options=None if options is None else options[g])
                self.stats.env_s += time.perf_counter() - t0
                messages = _messages(info, obs, None)
                if opened is None or messages != opened[0]:
                    opened = (messages, self.chat.opening(messages))
                prompt = opened[1]
                episodes.append(Episode(group=g, seed=int(seed), token_ids=list(prompt),
                                        logprobs=[0.0] * len(prompt), prompt_length=len(prompt),
                                        messages=messages))
                envs.append(env)

        between_s = 0.0  # time in on_turn (env steps, template deltas): not generation

        def on_turn(i: int, gen: Generation) -> list[int] | None:
            nonlocal between_s
            t0 = time.perf_counter()
            more = self._agent_turn(episodes[i], envs[i], gen)
            between_s += time.perf_counter() - t0
            return list(episodes[i].token_ids) if more else None

        first = {i: list(ep.token_ids) for i, ep in enumerate(episodes) if self._fits(ep, 0)}
        t0 = time.perf_counter()
        self.stats.generation_calls = self.engine.run_dialogues(first, on_turn)
        self.stats.generation_s = time.perf_counter() - t0 - between_s
        self.engine.clear_cache()
        self.stats.generated_tokens = sum(ep.num_generated_tokens for ep in episodes)
        self.stats.total_s = time.perf_counter() - start_time
        return episodes

    def _fits(self, ep: Episode, extra: int) -> bool:
        """Whether ``extra`` more context tokens and a full agent turn (+1 token to close it if it
        is cut) fit in ``max_seq_len``; if not, the episode ends here (``"context_length"``)."""
        need = len(ep.token_ids) + extra + self.engine.sampling.max_new_tokens + 1
        if self.max_seq_len is None or need <= self.max_seq_len:
            return True
        ep.truncated = True
        ep.termination_reason = "context_length"
        return False

    def _agent_turn(self, ep: Episode, env: gym.Env, gen: Generation) -> bool:
        """Append one sampled turn, step the env, append its reply; False when the episode ended."""
        start = len(ep.token_ids)
        ep.token_ids.extend(gen.token_ids)
        ep.logprobs.extend(gen.logprobs)
        ep.turn_spans.append((start, len(ep.token_ids)))
        ep.finish_reasons.append(gen.finish_reason)
        text_ids = gen.token_ids
        if gen.finish_reason == "stop":
            text_ids = gen.token_ids[:-1]
        else:  # cut by max_new_tokens: close the turn as the template would (context, not sampled)
            ep.token_ids.append(self.chat.end_of_turn_id)
            ep.logprobs.append(0.0)
        action = self.tokenizer.decode(text_ids, skip_special_tokens=False)

        t0 = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(action)
        self.stats.env_s += time.perf_counter() - t0

        ep.rewards.append(float(reward))
        ep.turn_costs.append(float(info.get("cost", 0.0)))
        ep.format_ok.append(bool(info.get("format_ok", True)))
        process = info.get("process_reward")
        ep.process_rewards.append(None if process is None else float(process))
        messages = _messages(info, obs, ep.messages + [{"role": "assistant", "content": action}])
        new_messages = messages[len(ep.messages) + 1:]
        ep.messages = messages
        ep.final_info = {k: v for k, v in info.items() if k != "messages"}
        if terminated or truncated:
            ep.terminated, ep.truncated = bool(terminated), bool(truncated)
            ep.termination_reason = info.get("termination_reason") or (
                "terminated" if terminated else "truncated")
            return False
        if self.max_turns is not None and ep.num_turns >= self.max_turns:
            ep.truncated, ep.termination_reason = True, "max_turns"
            return False
        delta = self.chat.delta(new_messages)
        if not self._fits(ep, len(delta)):
            return False
        ep.token_ids.extend(delta)
        ep.logprobs.extend([0.0] * len(delta))
        return True


def _messages(info: dict[str, Any], obs: str, history: list[dict[str, str]] | None):
    """The dialogue in chat format: ``info["messages"]`` (SPEC 3), or, for an env without it,
    ``history`` + the observation as a user message."""
    if isinstance(info.get("messages"), list):
        return [dict(m) for m in info["messages"]]
    return list(history or []) + [{"role": "user", "content": str(obs)}]
