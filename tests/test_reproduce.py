"""The reproduction's parts: the demonstration scripts, the cold-start mix, the policy agent, the
test-split summary and the checks of the expected result (hand-computed numbers)."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest

import interactcs_gym  # noqa: F401
from interactcs_gym.agents import load_agent


def _play(agent_name: str, user: int, seed: int = 0):
    env = gym.make("FDS-Hard-v0")
    agent = load_agent(agent_name)
    agent.reset(seed=seed)
    obs, info = env.reset(seed=seed, options={"user_index": user})
    actions, done = [], False
    while not done:
        actions.append(agent.act(obs, info))
        obs, _, term, trunc, info = env.step(actions[-1])
        done = term or trunc
    env.close()
    return actions, info


@pytest.mark.parametrize("user", range(8))
def test_generous_script_issues_the_voucher_on_its_third_turn_and_frugal_never(user):
    generous, info_g = _play("sop-generous", user)
    assert generous[2].endswith("<action>voucher</action>") and info_g["voucher_issued"]
    assert all(a.endswith("<action>chat</action>") for i, a in enumerate(generous) if i != 2)
    frugal, info_f = _play("sop-frugal", user)
    assert not info_f["voucher_issued"] and all(a.endswith("<action>chat</action>") for a in frugal)
    assert info_g["finished_ok"] and info_f["finished_ok"]
    assert generous[:2] == frugal[:2]  # the scripts differ only from the resolution on


def test_frugal_script_answers_the_demand_it_reads():
    from interactcs_gym.fds.demo_agents import (
        ESCALATE_REFUND,
        NOT_ELIGIBLE,
        REPORT_ONLY,
        FrugalSOPAgent,
    )

    agent = FrugalSOPAgent()
    cases = {"Please just report it to the restaurant.": REPORT_ONLY,
             "I want my money back.": ESCALATE_REFUND,
             "What compensation do I get?": NOT_ELIGIBLE}
    for text, expected in cases.items():
        agent.reset()
        info = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": text}]}
        turns = [agent.act(text, info) for _ in range(3)]
        assert f"<response>{expected}</response>" in turns[2]


def test_both_scripts_think_the_demand_they_read_then_decide():
    """The resolving turn's <think> starts with the reading (the same in both scripts), then the
    decision: "Compensate" (generous) or the frugal answer."""
    from interactcs_gym.fds.demo_agents import READINGS, FrugalSOPAgent, GenerousSOPAgent

    cases = {"Please just report it to the restaurant.": ("feedback_oriented", "Report it."),
             "I want my money back.": ("rigid_pursuit", "Escalate: no refund in chat."),
             "What compensation do I get?": ("incentive_open", "Explain: no compensation."),
             "What are my options?": ("preference_learning", "Explain: no compensation."),
             "Hmm.": (None, "Explain: no compensation.")}
    for text, (demand, frugal_plan) in cases.items():
        info = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": text}]}
        for agent, plan in ((GenerousSOPAgent(), "Compensate with a voucher."), (FrugalSOPAgent(), frugal_plan)):
            third = [agent.act(text, info) for _ in range(3)][2]
            assert third.startswith(f"<think>{READINGS[demand]} {plan}</think>")
    assert len({r.split()[1] for r in READINGS.values()}) == len(READINGS)  # a distinct word each


def test_demonstration_mix_counts_and_costs():
    from cmpo.cold_start import demonstration_mix

    rows = demonstration_mix(9, generous_share=2 / 3, seed=3)
    assert len(rows) == 9 and sum(r["cost"] for r in rows) == 6.0  # round(2/3 * 9) generous dialogues
    assert len({r["seed"] for r in rows}) == 9
    with pytest.raises(ValueError, match="generous_share"):
        demonstration_mix(4, generous_share=1.5)


def test_dialogue_template_drops_the_system_prompt_and_is_prefix_preserving(tiny_model_dir):
    from transformers import AutoTokenizer

    from cmpo.cold_start import DIALOGUE_TEMPLATE
    from cmpo.rollout import ChatDelta

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = DIALOGUE_TEMPLATE
    messages = [{"role": "system", "content": "a long SOP"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "A"}, {"role": "user", "content": "B"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "SOP" not in text and text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nhi")
    delta = ChatDelta(tok, (tok.eos_token_id,))
    opening = delta.opening(messages[:2])
    whole = tok.apply_chat_template(messages, tokenize=True, return_dict=False, add_generation_prompt=True)
    assistant = tok("A<|im_end|>", add_special_tokens=False)["input_ids"]
    assert opening + assistant + delta.delta(messages[3:]) == list(whole)


def test_summarize_by_hand():
    from cmpo.evaluate_policy import summarize

    records = [
        {"user": 0, "seed": 0, "sat": 4, "fr": True, "voucher": True, "demand": "incentive_open", "turns": 4},
        {"user": 1, "seed": 0, "sat": 2, "fr": True, "voucher": False, "demand": "rigid_pursuit", "turns": 6},
        {"user": 0, "seed": 1, "sat": 3, "fr": False, "voucher": True, "demand": "incentive_open", "turns": 5},
        {"user": 1, "seed": 1, "sat": None, "fr": True, "voucher": False, "demand": "rigid_pursuit", "turns": 5},
    ]
    s = summarize(records)
    assert s["sat"] == pytest.approx((4 + 2 + 3 + 1) / 4)            # no satisfaction counts as 1
    assert s["sat_std"] == pytest.approx(0.5)                       # per-seed means 3.0 and 2.0
    assert (s["fr"], s["v_rate"], s["turns"]) == (75.0, 50.0, 5.0)
    assert s["by_demand"]["incentive_open"] == {"sat": 3.5, "v_rate": 100.0}
    assert s["by_demand"]["rigid_pursuit"] == {"sat": 1.5, "v_rate": 0.0}
    with pytest.raises(ValueError):
        summarize([])


def test_budget_tracking_and_whom_ratio_by_hand():
    from cmpo.reproduce import budget_tracking, whom_ratio

    t = budget_tracking([0.9, 0.8, 0.5, 0.2, 0.4, 0.3])   # last half: 0.2, 0.4, 0.3
    assert t["mean_abs_error"] == pytest.approx((0.1 + 0.1 + 0.0) / 3)
    assert t["overshoot"] == pytest.approx(0.1) and t["oscillation"] == pytest.approx(0.1)
    by = {"incentive_open": {"v_rate": 60.0}, "preference_learning": {"v_rate": 40.0},
          "feedback_oriented": {"v_rate": 20.0}, "rigid_pursuit": {"v_rate": 0.0}}
    assert whom_ratio({"by_demand": by}) == pytest.approx(50.0 / 10.0)
    by["feedback_oriented"]["v_rate"] = 0.0
    assert math.isinf(whom_ratio({"by_demand": by}))


def test_checks_say_pass_and_miss_with_the_numbers():
    from cmpo.reproduce import checks

    def result(sat, v_rate, fr=100.0, by=(60.0, 40.0, 10.0, 10.0)):
        names = ("incentive_open", "preference_learning", "feedback_oriented", "rigid_pursuit")
        return {"sat": sat, "v_rate": v_rate, "fr": fr,
                "by_demand": {n: {"v_rate": v, "sat": sat} for n, v in zip(names, by)}}

    results = {"cold-start": result(3.0, 90.0), "cmpo-pid": result(2.98, 32.0), "grpo": result(3.1, 80.0),
               "cmpo-no-cost": result(3.0, 85.0), "cmpo-fixed": result(2.5, 28.0)}
    lines = checks(results, {})
    assert "**PASS** CMPO (PID) test V-Rate 0.320 within 0.30 ± 0.05" in lines[0]
    assert lines[1].startswith("- **PASS** CMPO (PID) Sat 2.98")
    assert "**PASS**" in lines[3] and "5.00x" in lines[3]
    assert "**MISS**" in lines[4] and "(difference -0.12)" in lines[4]
    assert "**PASS** without cost the test V-Rate stays above 0.5: 0.850" in lines[5]
    assert "**MISS** fixed λ misses the budget on one side: test V-Rate 0.280 (below 0.30)" in lines[6]


def test_policy_agent_plays_a_model_folder_greedy_and_sampled(tiny_model_dir):
    from interactcs_gym.agents.policy import PolicyAgent

    env = gym.make("FDS-Hard-v0")
    obs, info = env.reset(seed=0, options={"user_index": 0})
    greedy = PolicyAgent(tiny_model_dir, greedy=True, max_new_tokens=8)
    assert greedy.act(obs, info) == greedy.act(obs, info)  # argmax: the same turn twice
    sampled = PolicyAgent(tiny_model_dir, max_new_tokens=8)
    sampled.reset(seed=5)
    first = sampled.act(obs, info)
    sampled.reset(seed=5)
    assert sampled.act(obs, info) == first                 # seeded by reset
    env.step(first)
    env.close()
    with pytest.raises(ValueError, match="no model folder"):
        PolicyAgent("/nonexistent/model")
    with pytest.raises(ValueError, match="temperature"):
        PolicyAgent(tiny_model_dir, temperature=0)
