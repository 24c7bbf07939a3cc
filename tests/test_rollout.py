"""Multi-turn rollouts: grouping, batching, token records, incremental chat rendering, loss mask."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cmpo.engines import (  # noqa: E402
    Generation,
    GenerationEngine,
    SamplingParams,
    make_engine,
    stop_token_ids_for,
)
from cmpo.rollout import ChatDelta, RolloutCollector  # noqa: E402
from tests.toy_text_env import ToyKeywordEnv, register_toy_env  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


class ScriptedEngine(GenerationEngine):
    """Answers every prompt with the canonical tokens of ``reply(turn)`` + ``<|im_end|>`` and
    records the batch size of each call."""

    def __init__(self, tokenizer, reply):
        self.tokenizer, self.reply = tokenizer, reply
        self.sampling = SamplingParams(max_new_tokens=64, stop_token_ids=stop_token_ids_for(tokenizer))
        self.batch_sizes = []

    def generate(self, prompts):
        self.batch_sizes.append(len(prompts))
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        out = []
        for prompt in prompts:
            turn = self.tokenizer.decode(prompt).count("<|im_start|>assistant") - 1
            ids = self.tokenizer.encode(self.reply(turn), add_special_tokens=False) + [end]
            out.append(Generation(ids, [-0.5] * len(ids), "stop"))
        return out


def test_groups_share_reset_seed_and_dialogues_are_batched_per_turn(tiny):
    _, tok = tiny
    env_id = register_toy_env()
    engine = ScriptedEngine(tok, lambda t: f"turn {t} words")
    collector = RolloutCollector(env_id, engine, tok, group_size=3, env_kwargs={"max_turns": 4})
    episodes = collector.collect([11, 22])
    assert [ep.group for ep in episodes] == [0, 0, 0, 1, 1, 1]
    assert [ep.seed for ep in episodes] == [11, 11, 11, 22, 22, 22]
    opening = {ep.group: ep.messages[1]["content"] for ep in episodes}
    assert all(ep.messages[1]["content"] == opening[ep.group] for ep in episodes)
    # every unfinished dialogue in one call per turn: 6 dialogues x 4 turns
    assert engine.batch_sizes == [6, 6, 6, 6]
    assert all(ep.num_turns == 4 and ep.truncated and not ep.terminated for ep in episodes)
    assert collector.stats.generation_calls == 4


def test_token_record_equals_template_of_whole_dialogue(tiny):
    _, tok = tiny
    env_id = register_toy_env()
    engine = ScriptedEngine(tok, lambda t: ["Hello! How can I help?", "Sure, here: ok.", "Done?"][t])
    collector = RolloutCollector(env_id, engine, tok, group_size=1, env_kwargs={"max_turns": 3})
    (ep,) = collector.collect([5])
    full = tok.apply_chat_template(ep.messages[:-1], tokenize=True, return_dict=False)
    # the dialogue up to the last agent turn's end-of-turn token is the template, token for token;
    # the template then only adds the newline after <|im_end|>
    assert full[:len(ep.token_ids)] == ep.token_ids
    assert tok.decode(full[len(ep.token_ids):]) == "\n"
    assert ep.prompt_length == len(tok.apply_chat_template(ep.messages[:2], add_generation_prompt=True,
                                                           tokenize=True, return_dict=False))


def test_loss_mask_covers_exactly_the_agent_tokens(tiny):
    _, tok = tiny
    env_id = register_toy_env()
    replies = ["first reply", "second, longer reply text", "third"]
    engine = ScriptedEngine(tok, lambda t: replies[t])
    (ep,) = RolloutCollector(env_id, engine, tok, group_size=1, env_kwargs={"max_turns": 3}).collect([1])
    mask = ep.agent_mask()
    assert len(mask) == len(ep.token_ids) == len(ep.logprobs)
    assert [tok.decode([t for t, m in zip(ep.token_ids[s:e], mask[s:e]) if m]) for s, e in ep.turn_spans] == \
        [r + "<|im_end|>" for r in replies]
    assert sum(mask) == sum(e - s for s, e in ep.turn_spans)
    outside = tok.decode([t for t, m in zip(ep.token_ids, mask) if not m])
    assert outside == tok.decode(tok.apply_chat_template(ep.messages[:2], add_generation_prompt=True,
                                                         tokenize=True, return_dict=False)) + \
        "\n<|im_start|>user\n" + ep.messages[3]["content"] + "<|im_end|>\n<|im_start|>assistant\n" + \
        "\n<|im_start|>user\n" + ep.messages[5]["content"] + "<|im_end|>\n<|im_start|>assistant\n"
    assert [lp for lp, m in zip(ep.logprobs, mask) if not m] == [0.0] * (len(mask) - sum(mask))
    assert all(lp == -0.5 for lp, m in zip(ep.logprobs, mask) if m)


def test_costs_process_rewards_and_outcome_are_recorded(tiny):
    _, tok = tiny
    env_id = register_toy_env()
    env = ToyKeywordEnv()
    env.reset(seed=3)
    word = env.word
    replies = ["x" * 50, "no idea", f"{word}!"]  # long turn costs 1.0, then the word ends it
    engine = ScriptedEngine(tok, lambda t: replies[t])
    (ep,) = RolloutCollector(env_id, engine, tok, group_size=1, env_kwargs={"max_turns": 5}).collect([3])
    assert ep.turn_costs == [1.0, 0.0, 0.0] and ep.session_cost == 1.0
    assert ep.rewards == [0.0, 0.0, 1.0] and ep.outcome == 1.0
    assert ep.process_rewards[2] == 1.0 and ep.terminated and not ep.truncated
    assert ep.termination_reason == "terminated"


def test_env_without_messages_in_info_is_rendered_from_observations(tiny):
    _, tok = tiny
    env_id = register_toy_env()
    engine = ScriptedEngine(tok, lambda t: "hello")
    (ep,) = RolloutCollector(env_id, engine, tok, group_size=1,
                             env_kwargs={"max_turns": 2, "with_messages": False}).collect([0])
    assert [m["role"] for m in ep.messages] == ["user", "assistant", "user", "assistant", "user"]
    full = tok.apply_chat_template(ep.messages[:-1], tokenize=True, return_dict=False)
    assert full[:len(ep.token_ids)] == ep.token_ids


def test_turn_cut_by_length_is_closed_and_context_limit_ends_episode(tiny):
    model, tok = tiny
    env_id = register_toy_env()
    sampling = SamplingParams(max_new_tokens=5, greedy=True, stop_token_ids=stop_token_ids_for(tok))
    engine = make_engine("transformers", model, tok, sampling)
    (ep,) = RolloutCollector(env_id, engine, tok, group_size=1, env_kwargs={"max_turns": 3}).collect([0])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for (start, stop), reason in zip(ep.turn_spans, ep.finish_reasons):
        assert stop - start == 5 and reason == "length"
        assert ep.token_ids[stop] == end and ep.agent_mask()[stop] == 0  # closed, not trained on
    budget = ep.prompt_length + 20
    (short,) = RolloutCollector(env_id, engine, tok, group_size=1, env_kwargs={"max_turns": 3},
                                max_seq_len=budget).collect([0])
    assert short.termination_reason == "context_length" and short.truncated
    assert len(short.token_ids) <= budget and short.num_turns < 3


def test_batched_rollout_equals_one_at_a_time_rollout_greedy(tiny):
    model, tok = tiny
    env_id = register_toy_env()
    sampling = SamplingParams(max_new_tokens=8, greedy=True, stop_token_ids=stop_token_ids_for(tok))
    seeds = [0, 1, 2]

    def run(max_batch_size):
        engine = make_engine("transformers", model, tok, sampling, max_batch_size=max_batch_size)
        return RolloutCollector(env_id, engine, tok, group_size=2, env_kwargs={"max_turns": 3}).collect(seeds)

    batched, single = run(0), run(1)
    assert [ep.token_ids for ep in batched] == [ep.token_ids for ep in single]
    assert [ep.turn_spans for ep in batched] == [ep.turn_spans for ep in single]
    for a, b in zip(batched, single):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert (a.turn_costs, a.rewards, a.messages) == (b.turn_costs, b.rewards, b.messages)


def test_chat_delta_rejects_a_template_that_rewrites_history(tiny):
    _, tok = tiny
    ids = stop_token_ids_for(tok)
    rewriting = ("{%- for m in messages %}{%- if loop.last or m['role'] != 'assistant' %}"
                 "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                 "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\\n{%- endif %}")
    delta = ChatDelta(tok, ids, chat_template=rewriting)
    with pytest.raises(ValueError, match="prefix-preserving"):
        delta.delta([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="stop"):
        ChatDelta(tok, (10**6,))


def test_sampling_logprobs_are_what_the_trainer_scores_across_turns(tiny):
    """Later turns reuse the keys and values of earlier ones (only new tokens are fed); the
    recorded log-probs must still be those of a full forward pass over the whole dialogue."""
    from cmpo.modeling import score_tokens

    model, tok = tiny
    env_id = register_toy_env()
    sampling = SamplingParams(max_new_tokens=6, temperature=0.8, stop_token_ids=stop_token_ids_for(tok))
    engine = make_engine("transformers", model, tok, sampling)
    fed = []  # a hook, not a wrapper: generate reads forward's signature (e.g. to pass position_ids)
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: fed.append(kwargs["input_ids"].shape[1]),
                                           with_kwargs=True)
    try:
        torch.manual_seed(3)
        episodes = RolloutCollector(env_id, engine, tok, group_size=2, env_kwargs={"max_turns": 3}).collect([4, 5])
    finally:
        hook.remove()
    prefills = [n for n in fed if n > 1]
    assert len(prefills) == 3 and prefills[1] < episodes[0].prompt_length  # turns 2-3 feed only new tokens
    for ep in episodes:
        ids = torch.tensor([ep.token_ids])
        mask = torch.tensor([ep.agent_mask()], dtype=torch.bool)
        with torch.no_grad():
            logp, _, cols = score_tokens(model, ids, torch.ones_like(ids), mask, 0.8)
        assert torch.allclose(logp[0], torch.tensor(ep.logprobs)[cols], atol=1e-4)


def test_turns_that_end_early_join_the_rows_still_writing(tiny, monkeypatch):
    """With uneven turn lengths the transformers engine ends a call once at most half of its rows
    are still writing, steps the envs of the ended turns and lets their next turns join those rows:
    some call then holds dialogues at different turns. Every dialogue must still be exactly what
    its tokens and log-probs say: each turn ends at its first stop token (or at the budget), and
    the recorded log-probs are those of a full forward pass over the whole dialogue."""
    from cmpo.modeling import score_tokens

    model, tok = tiny
    env_id = register_toy_env()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    stops = tuple(sorted({end, *range(3, len(tok), 6)}))  # turns end after a few tokens or many
    sampling = SamplingParams(max_new_tokens=16, temperature=1.5, stop_token_ids=stops)
    engine = make_engine("transformers", model, tok, sampling)
    turns_per_call = []
    original = engine._generate

    def recording(model_, prompts, *args, **kwargs):
        turns_per_call.append({tok.decode(p).count("<|im_start|>assistant") for p in prompts})
        return original(model_, prompts, *args, **kwargs)

    engine._generate = recording
    from cmpo.engines.kv_cache import PrefixCache

    split = []  # replies fed apart from the rows still writing (not padded to their width)
    original_prefill = PrefixCache.prefill_new_turns

    def recording_prefill(store, model_, picks, prompts):
        assert not torch.is_grad_enabled()  # rollouts build no autograd graph
        out = original_prefill(store, model_, picks, prompts)
        split.append(out != picks)
        return out

    monkeypatch.setattr(PrefixCache, "prefill_new_turns", recording_prefill)
    collector = RolloutCollector(env_id, engine, tok, group_size=2, env_kwargs={"max_turns": 3})
    for seed in range(10):  # the first seed whose turns end unevenly enough to join
        turns_per_call.clear()
        torch.manual_seed(seed)
        episodes = collector.collect([0, 1, 2, 3])
        if any(len(turns) > 1 for turns in turns_per_call):
            break
    assert any(len(turns) > 1 for turns in turns_per_call), turns_per_call
    assert any(split)
    assert collector.stats.generation_calls == len(turns_per_call)
    for ep in episodes:
        assert ep.num_turns == 3
        for (start, stop), reason in zip(ep.turn_spans, ep.finish_reasons):
            turn = ep.token_ids[start:stop]
            assert not set(turn[:-1]) & set(stops) and len(turn) <= 16
            assert reason == ("stop" if turn[-1] in stops else "length")
        ids = torch.tensor([ep.token_ids])
        mask = torch.tensor([ep.agent_mask()], dtype=torch.bool)
        with torch.no_grad():
            logp, _, cols = score_tokens(model, ids, torch.ones_like(ids), mask, 1.5)
        assert torch.allclose(logp[0], torch.tensor(ep.logprobs)[cols], atol=1e-4)


def test_format_ok_is_recorded_per_turn_and_an_unfinished_episode_gets_the_set_outcome(tiny):
    """FDS's info["format_ok"] per turn; set_unfinished_outcome zeroes the rewards of an episode
    with a malformed turn and puts the given outcome on its last turn, finished ones untouched."""
    import interactcs_gym  # noqa: F401
    from cmpo.rollout import Episode, set_unfinished_outcome

    _, tok = tiny
    good = ("<think>Greet.</think><response>I'm sorry about your order. What happened?</response>"
            "<action>chat</action>")
    replies = [good, "no tags at all", good]
    engine = ScriptedEngine(tok, lambda t: replies[min(t, 2)])
    (ep,) = RolloutCollector("FDS-Hard-v0", engine, tok, group_size=1,
                             env_kwargs={"max_turns": 3}).collect([0])
    assert ep.format_ok[:2] == [True, False] and not ep.finished
    assert ep.final_info["finished_ok"] is False  # the env's FR agrees

    done = Episode(group=0, seed=0, token_ids=[], logprobs=[], prompt_length=0,
                   rewards=[0.0, 0.0, 0.75], format_ok=[True, True, True])
    broken = Episode(group=0, seed=0, token_ids=[], logprobs=[], prompt_length=0,
                     rewards=[0.0, 0.0, 0.75], format_ok=[True, False, True])
    assert set_unfinished_outcome([done, broken], -0.25) == 1
    assert done.rewards == [0.0, 0.0, 0.75] and done.outcome == 0.75
    assert broken.rewards == [0.0, 0.0, -0.25] and broken.outcome == -0.25
