"""Reference agents on the FDS test splits: protocol, voucher rates, SOP agent sanity, determinism."""

from __future__ import annotations

import statistics

import gymnasium as gym
import pytest

import interactcs_gym  # noqa: F401
from interactcs_gym.agents import AGENTS, Agent, load_agent
from interactcs_gym.fds.protocol import parse_turn

N_USERS = 80


def run(env_id: str, agent: Agent, seeds=(0,), users=range(N_USERS), spy=None):
    """Play users x seeds; returns the last info of every episode."""
    env = gym.make(env_id)
    out = []
    for seed in seeds:
        for u in users:
            agent.reset(seed=seed * 1000 + u)
            obs, info = env.reset(seed=seed, options={"user_index": u})
            done = False
            while not done:
                action = agent.act(obs, info)
                if spy is not None:
                    spy(action)
                obs, r, term, trunc, info = env.step(action)
                done = term or trunc
            out.append(info)
    env.close()
    return out


def sat(infos):
    return statistics.mean(i["satisfaction"] for i in infos)


@pytest.mark.parametrize("name", ["sop", "always-voucher", "never-voucher", "random"])
def test_reference_agents_follow_the_protocol(name):
    assert name in AGENTS
    bad = []
    run("FDS-Hard-v0", load_agent(name), users=range(20),
        spy=lambda a: bad.append(a) if not parse_turn(a).ok else None)
    assert bad == []


def test_voucher_rates_of_the_fixed_agents():
    for env_id in ("FDS-Hard-v0", "FDS-Easy-v0"):
        never = run(env_id, load_agent("never-voucher"))
        always = run(env_id, load_agent("always-voucher"))
        assert not any(i["voucher_issued"] for i in never) and all(i["cost_total"] == 0 for i in never)
        assert all(i["voucher_issued"] for i in always) and all(i["cost_total"] == 1.0 for i in always)
        assert all(i["finished_ok"] for i in never + always)


def test_sop_agent_scores_higher_on_easy_than_hard_and_spends_little():
    hard = run("FDS-Hard-v0", load_agent("sop"))
    easy = run("FDS-Easy-v0", load_agent("sop"))
    assert sat(easy) > sat(hard)
    never = run("FDS-Hard-v0", load_agent("never-voucher"))
    assert sat(hard) >= sat(never)
    v_rate = statistics.mean(i["voucher_issued"] for i in hard + easy)
    assert 0 < v_rate < 0.5
    assert all(i["finished_ok"] for i in hard + easy)


def test_a_voucher_is_worth_more_to_incentive_open_users_than_to_feedback_oriented_ones():
    """Always- and never-voucher say the same words; only the first turn's action differs."""
    gain = {}
    for env_id in ("FDS-Hard-v0", "FDS-Easy-v0"):
        always = run(env_id, load_agent("always-voucher"))
        never = run(env_id, load_agent("never-voucher"))
        for a, n in zip(always, never):
            assert a["task"]["user_id"] == n["task"]["user_id"]
            gain.setdefault(a["task"]["demand_type"], []).append(a["satisfaction"] - n["satisfaction"])
    assert statistics.mean(gain["incentive_open"]) > statistics.mean(gain["feedback_oriented"]) + 1.0


def test_random_agent_is_seeded_and_worst_on_fr():
    a, b = load_agent("random"), load_agent("random")
    turns_a, turns_b = [], []
    run("FDS-Easy-v0", a, users=range(5), spy=turns_a.append)
    run("FDS-Easy-v0", b, users=range(5), spy=turns_b.append)
    assert turns_a == turns_b
    fr = statistics.mean(i["finished_ok"] for i in run("FDS-Hard-v0", load_agent("random")))
    assert fr < 0.9


def test_sop_agent_does_not_read_the_task():
    """Hiding info["task"] from the SOP agent changes nothing: it uses what a real agent sees."""

    class Blind(Agent):
        def __init__(self):
            self.inner = load_agent("sop")

        def reset(self, *, seed=None):
            self.inner.reset(seed=seed)

        def act(self, observation, info):
            return self.inner.act(observation, {**info, "task": {"demand_type": "nonsense"}})

    users = range(30)
    assert [i["satisfaction"] for i in run("FDS-Hard-v0", Blind(), users=users)] == \
        [i["satisfaction"] for i in run("FDS-Hard-v0", load_agent("sop"), users=users)]


def test_sop_agent_issues_vouchers_only_when_the_sop_allows():
    for env_id in ("FDS-Hard-v0", "FDS-Easy-v0"):
        for info in run(env_id, load_agent("sop")):
            if info["voucher_issued"]:
                assert info["task"]["fair_remedy"] == "voucher"
