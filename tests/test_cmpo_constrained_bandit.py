"""Short run of examples/constrained_bandit.py: the PID properties of Stooke et al. 2020."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "constrained_bandit.py"


@pytest.fixture(scope="module")
def bandit():
    spec = importlib.util.spec_from_file_location("constrained_bandit", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pid_settles_at_the_limit_with_less_overshoot_and_oscillation(bandit, tmp_path):
    metrics = bandit.main(["--out", str(tmp_path), "--seeds", "1"], log=lambda _: None)
    m = {variant: runs[0] for variant, runs in metrics.items()}
    d = bandit.COST_LIMIT
    # PID: within ±0.03 of d, overshoot and oscillation clearly below the plain Lagrangian's
    assert abs(m["pid"]["final_cost"] - d) <= 0.03
    assert m["pid"]["overshoot"] <= 0.5 * m["lagrangian"]["overshoot"]
    assert m["pid"]["oscillation"] <= 0.25 * m["lagrangian"]["oscillation"]
    # no cost term: well above the budget; a fixed λ lands above or below d depending on its value
    assert m["none"]["final_cost"] >= d + 0.5
    assert m["fixed-low"]["final_cost"] >= d + 0.3
    assert m["fixed-high"]["final_cost"] <= d - 0.2
    # spending the budget buys reward: PID beats the over-cautious fixed λ
    assert m["pid"]["final_reward"] > m["fixed-high"]["final_reward"] + 0.1
    table = (tmp_path / "table.md").read_text()
    assert sum(line.startswith("| ") for line in table.splitlines()) == len(bandit.VARIANTS) + 1
    assert "| pid | pid (kp=4.0" in table
    assert (tmp_path / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
