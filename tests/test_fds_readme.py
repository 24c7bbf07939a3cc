"""The README's FDS sections say what the code does: the example runs, the table is measured."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import interactcs_gym  # noqa: F401
from interactcs_gym.agents import load_agent

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def test_benchmark_your_own_agent_example_runs():
    code = re.search(r"```python\n(.*?)```", section("Benchmark your own agent"), re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT),
                         env={"PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"Sat \d\.\d\d  FR 100\.0%  V-Rate 0\.0%\n", out.stdout)


def test_documented_weights_match_the_code():
    from interactcs_gym.fds.splits import DIFFICULTY_WEIGHTS

    text = section("FoodDeliveryService")
    for diff, weights in DIFFICULTY_WEIGHTS.items():
        assert f"| {diff} | " + " | ".join(f"{w:.2f}" for w in weights) + " |" in text


@pytest.mark.slow
def test_reference_agent_table_is_what_the_code_measures():
    rows = re.findall(r"^\| (FDS-\w+-v0) \| ([\w-]+) \| ([\d.]+) ± ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$",
                      section("FoodDeliveryService"), re.M)
    assert len(rows) == 8
    for env_id, name, sat, std, fr, vrate in rows:
        env, agent = gym.make(env_id), load_agent(name)
        eps = []
        for seed in range(3):
            for user in range(80):
                agent.reset(seed=seed * 100_003 + user)
                obs, info = env.reset(seed=seed, options={"user_index": user})
                done = False
                while not done:
                    obs, r, term, trunc, info = env.step(agent.act(obs, info))
                    done = term or trunc
                eps.append(info)
        per_seed = [statistics.mean(e["satisfaction"] for e in eps[k * 80:(k + 1) * 80]) for k in range(3)]
        got = (f"{statistics.mean(e['satisfaction'] for e in eps):.2f}", f"{statistics.pstdev(per_seed):.2f}",
               f"{100 * statistics.mean(e['finished_ok'] for e in eps):.1f}",
               f"{100 * statistics.mean(e['voucher_issued'] for e in eps):.1f}")
        assert got == (sat, std, fr, vrate), (env_id, name)
