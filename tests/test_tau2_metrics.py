"""The paper's τ² metrics from the official reward breakdown (pure: runs without τ²-bench), and the
evaluation CLI's τ² metric family."""

from __future__ import annotations

import pytest
from tau2_support import requires_tau2

from interactcs_gym.tau2.metrics import episode_metrics


def _info(reward, db=None, comm=(), actions=None):
    return {"reward": reward,
            "db_check": None if db is None else {"db_match": bool(db), "db_reward": db},
            "communicate_checks": [{"info": str(i), "met": m} for i, m in enumerate(comm)],
            "action_checks": None if actions is None else [
                {"action": {}, "action_match": m, "action_reward": float(m)} for m in actions]}


def test_a_passed_retail_episode():
    parts = episode_metrics(_info(1.0, db=1.0, comm=[True, True], actions=[True] * 4), 4)
    assert parts == {"pass": 1.0, "communicate": 1.0, "db": 1.0, "action_reward": 1.0,
                     "actions_matched": 4, "actions_total": 4}


def test_a_failed_episode_keeps_its_parts():
    # right database, one of two required facts unsaid, 3 of 4 gold actions: reward 1 x 0 = 0
    parts = episode_metrics(
        _info(0.0, db=1.0, comm=[True, False], actions=[True, True, False, True]), 4)
    assert parts == {"pass": 0.0, "communicate": 0.0, "db": 1.0, "action_reward": 0.75,
                     "actions_matched": 3, "actions_total": 4}


def test_tasks_without_checks_and_premature_ends():
    assert episode_metrics(_info(1.0, db=1.0), 0)["action_reward"] == 1.0   # nothing to match
    assert episode_metrics(_info(1.0, db=1.0), 0)["communicate"] == 1.0     # nothing to say
    assert episode_metrics(_info(0.0), 5, premature=True) == {
        "pass": 0.0, "communicate": 0.0, "db": 0.0, "action_reward": 0.0,
        "actions_matched": 0, "actions_total": 5}


def test_metric_family_of_the_evaluation_cli():
    from interactcs_gym.core.metrics import summarize_episodes
    from interactcs_gym.evaluation.metrics import resolve_family
    from interactcs_gym.tau2.env import Tau2Env
    from interactcs_gym.tau2.metrics import TAU2_METRICS

    assert resolve_family(Tau2Env.metric_family) is TAU2_METRICS

    def record(seed, user, parts, status="ok", cost=0.0):
        return {"status": status, "seed_index": seed, "user_index": user, "cost_total": cost,
                "turns": 4, "final_info": {"tau2_metrics": parts}}

    won = episode_metrics(_info(1.0, db=1.0, comm=[True], actions=[True, True]), 2)
    lost = episode_metrics(_info(0.0, db=0.0, comm=[True], actions=[True, False]), 2)
    records = [record(0, 0, won, cost=100.0), record(0, 1, lost),
               record(1, 0, won), record(1, 1, None, status="agent_error")]
    summary = summarize_episodes(TAU2_METRICS, records)
    assert summary["pass"].mean == pytest.approx(0.5) and summary["pass"].std == 0.0
    assert summary["comm"].mean == pytest.approx((1.0 + 0.5) / 2)   # seed 1's failed agent: 0
    assert summary["actions_matched"].mean == pytest.approx((3 + 2) / 2)  # summed per seed
    assert summary["action_reward"].mean == pytest.approx((0.75 + 0.5) / 2)
    assert summary["cost"].mean == pytest.approx((50.0 + 0.0) / 2)


@requires_tau2
def test_evaluation_cli_on_a_tau2_id(tmp_path, capsys):
    """The CLI end to end, offline (random agent, scripted user): the τ² columns."""
    import json

    from interactcs_gym.evaluation.cli import main

    out = tmp_path / "tau2.jsonl"
    assert main(["--env", "Tau2-Retail-v0", "--env-kwargs", '{"user_simulator": "scripted"}',
                 "--agent", "random", "--users", "3", "--seeds", "1", "--out", str(out),
                 "--no-progress"]) == 0
    report = capsys.readouterr().out
    columns = "| Pass@1 (%) | Comm. rate (%) | DB rate (%) | Action reward | Actions matched |"
    assert columns in report
    records = map(json.loads, out.read_text().splitlines())
    episodes = [r for r in records if r["record"] == "episode"]
    assert [e["final_info"]["task"]["task_id"] for e in episodes] == ["0", "1", "2"]
    assert all(e["metric_family"] == "interactcs_gym.tau2.metrics:TAU2_METRICS" for e in episodes)
    assert all(e["final_info"]["tau2_metrics"]["pass"] == 0.0 for e in episodes)


@requires_tau2
def test_evaluation_cli_with_the_gold_reference_agent(tmp_path, capsys):
    """The reference agent of the τ² envs through the CLI, offline: airline's tasks 0, 1, 2 (the
    scripted user opens with the reason for calling and stops at the agent's summary)."""
    import json

    from interactcs_gym.evaluation.cli import main

    out = tmp_path / "gold.jsonl"
    assert main(["--env", "Tau2-Airline-v0", "--env-kwargs", '{"user_simulator": "scripted"}',
                 "--agent", "interactcs_gym.tau2.replay:GoldAgent", "--users", "3", "--seeds", "1",
                 "--out", str(out), "--no-progress"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("| gold | Tau2-Airline-v0"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # Pass@1, Comm, DB 100 %; action reward 1; 0 + 2 + 4 gold actions matched; task 2 grants a
    # $50 certificate: 50 / 3 = 16.67 per session; 1 + 3 + 5 agent turns: 3.0 per session
    assert cells[4:] == ["100.0 ± 0.0", "100.0 ± 0.0", "100.0 ± 0.0", "1.000 ± 0.000",
                         "6.0 ± 0.0", "16.67 ± 0.00", "3.0 ± 0.0", "0"]
    episodes = [r for r in map(json.loads, out.read_text().splitlines())
                if r["record"] == "episode"]
    assert [e["final_info"]["task"]["task_id"] for e in episodes] == ["0", "1", "2"]
    assert [e["final_info"]["reward_info"]["reward"] for e in episodes] == [1.0, 1.0, 1.0]
