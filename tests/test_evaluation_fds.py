"""The evaluation CLI end to end on the real FDS env with the reference agents (issue 3, point 10)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("interactcs_gym.fds.env")
pytest.importorskip("interactcs_gym.fds.sop_agent")

from test_evaluation_cli import REPO, by_key, cli_env, episodes, metrics, run_cli  # noqa: E402

from interactcs_gym.evaluation import evaluate  # noqa: E402
from interactcs_gym.evaluation.report import load_runs  # noqa: E402

USERS, SEEDS = 4, 2


def test_sop_on_fds_hard_records_table1_fields(tmp_path):
    out = tmp_path / "sop-hard.jsonl"
    proc = run_cli("--env", "FDS-Hard-v0", "--agent", "sop", "--users", USERS, "--seeds", SEEDS,
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    eps = episodes(out)
    assert len({(e["user_index"], e["seed_index"]) for e in eps}) == len(eps) == USERS * SEEDS
    for e in eps:
        assert e["status"] == "ok" and e["metric_family"] == "fds"
        assert e["user_selection"] == "options"
        assert e["final_info"]["satisfaction"] in (1, 2, 3, 4, 5)
        assert isinstance(e["final_info"]["finished_ok"], bool)
        assert isinstance(e["final_info"]["voucher_issued"], bool)
        assert e["termination_reason"] and e["messages"][0]["role"] == "system"
        assert e["final_reward"] == pytest.approx((e["final_info"]["satisfaction"] - 1) / 4)
    header = "| Run | Env | Agent | Users × Seeds | Sat | FR (%) | Comm | Logic | V-Rate (%)"
    assert header in proc.stdout and "n/a" in proc.stdout
    # user index u is the same test user on every seed
    users = {}
    for e in eps:
        assert e["final_info"]["task"]["user_index"] == e["user_index"]
        users.setdefault(e["user_index"], set()).add(e["final_info"]["task"]["user_id"])
    assert all(len(v) == 1 for v in users.values()) and len(set().union(*users.values())) == USERS


def test_more_users_than_the_test_split_fails_fast(tmp_path, capsys):
    from interactcs_gym.evaluation.cli import main

    assert main(["--env", "FDS-Hard-v0", "--agent", "sop", "--users", "81", "--seeds", "1",
                 "--out", str(tmp_path / "x.jsonl")]) == 1
    assert "takes user_index 0 but not 80" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.slow
def test_kill_and_resume_on_fds_hard_with_sop(tmp_path):
    """SIGKILL half-way, rerun: exactly N x S distinct episodes, identical to an uninterrupted run."""
    users = 5
    slow = ["--env", "FDS-Hard-v0", "--agent", "eval_toy_env:SlowAgent",
            "--agent-kwargs", '{"inner": "sop", "delay": 0.01}', "--users", users, "--seeds", SEEDS,
            "--no-progress"]
    killed = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "interactcs_gym.evaluate", *map(str, slow),
                             "--out", str(killed)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if killed.exists() and killed.read_text().count('"record": "episode"') >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(episodes(killed))
    assert 3 <= written < users * SEEDS

    resumed = run_cli(*slow, "--out", killed)
    assert resumed.returncode == 0, resumed.stderr
    eps = episodes(killed)
    assert len(eps) == len({(e["user_index"], e["seed_index"]) for e in eps}) == users * SEEDS

    clean = tmp_path / "clean.jsonl"  # the plain sop agent, never interrupted
    assert run_cli("--env", "FDS-Hard-v0", "--agent", "sop", "--users", users, "--seeds", SEEDS,
                   "--no-progress", "--out", clean).returncode == 0
    assert by_key(killed) == by_key(clean)
    assert metrics(killed) == metrics(clean)


def test_fixed_voucher_policies_have_v_rate_0_and_100(tmp_path):
    rates = {}
    for agent in ("never-voucher", "always-voucher"):
        result = evaluate("FDS-Hard-v0", agent, users=USERS, seeds=SEEDS,
                          out=tmp_path / f"{agent}.jsonl", progress=False)
        assert len(result.records) == USERS * SEEDS
        [run] = load_runs([result.out])
        rates[agent] = run.metrics["v_rate"]
    assert rates["never-voucher"].mean == 0.0 and rates["always-voucher"].mean == 1.0


def test_episodes_follow_the_documented_seeds(tmp_path):
    """Episode (u, s) is reset(seed=s, options={"user_index": u}) with the agent reset by
    seed s * 100003 + u: replaying that by hand gives the recorded dialogue, word for word."""
    import gymnasium as gym

    from interactcs_gym.agents import load_agent

    result = evaluate("FDS-Hard-v0", "random", users=3, seeds=2, out=tmp_path / "r.jsonl",
                      progress=False)
    env, agent = gym.make("FDS-Hard-v0"), load_agent("random")
    for record in result.records:
        u, s = record["user_index"], record["seed_index"]
        agent.reset(seed=s * 100_003 + u)
        obs, info = env.reset(seed=s, options={"user_index": u})
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
            done = terminated or truncated
        assert (record["seed"], record["agent_seed"]) == (s, s * 100_003 + u)
        assert record["messages"] == info["messages"]
        assert record["final_info"]["satisfaction"] == info["satisfaction"]
