"""``python -m cmpo.reproduce --quick`` learns in the expected direction (seeded, CPU).

From the cold start (test V-Rate far above the budget d = 0.30), CMPO with the PID-Lagrangian
lowers the test V-Rate toward d, and without the cost term it stays above 0.5, while both keep the
protocol. See the test's docstring for the margins measured and the false-failure rate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

ROOT = Path(__file__).resolve().parents[1]
COLD_MIN, PID_MAX, DROP_MIN, FREE_MIN, FR_MIN = 0.42, 0.47, 0.05, 0.50, 60.0


@pytest.mark.slow
@pytest.mark.reproduce
def test_quick_reproduction_pid_lowers_the_voucher_rate_toward_the_budget(tmp_path):
    """Measured (``python -m cmpo.reproduce --quick``, seed 0, 80 test users x 1 seed, shared
    2-core machine, 13 min): test V-Rate cold start 0.575, CMPO (PID) 0.338, without cost 0.662;
    FR 91.2 / 80.0 / 77.5 %. Thresholds and their margins, in binomial standard errors of a rate
    over 80 episodes (σ = sqrt(p(1 − p)/80)):

    ========================  ========  ===========  ==========================
    assertion                 measured  threshold    margin (false failure)
    ========================  ========  ===========  ==========================
    cold start V-Rate >=      0.575     0.42         2.8 σ (0.3 %)
    PID V-Rate <=             0.338     0.47         2.5 σ (0.6 %)
    cold − PID >=             0.237     0.05         2.4 σ of the difference (0.7 %)
    no-cost V-Rate >=         0.662     0.50         3.1 σ (0.1 %)
    FR of each >=             77.5 %    60 %         3.7 σ (< 0.1 %)
    ========================  ========  ===========  ==========================

    False-failure rate ≈ 1.7 % (union bound) when the test-split sampling of the same trained
    policies is the only randomness. On one machine the seeded run repeats exactly (rate 0); on
    another, floating-point differences change the training trajectory, whose spread was not
    measured (one training seed), so the rate there may be higher. The no-cost direction is the
    fragile one: in the full reproduction (30 steps, another cold start) the run without the cost
    term also fell, to 0.367, with FR 77.9 % (README, "Training with CMPO").
    """
    out = tmp_path / "quick"
    cmd = [sys.executable, "-m", "cmpo.reproduce", "--quick", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())["policies"]
    cold, pid, free = (results[k]["v_rate"] / 100 for k in ("cold-start", "cmpo-pid", "cmpo-no-cost"))
    assert cold >= COLD_MIN, results["cold-start"]
    assert pid <= PID_MAX and pid < cold - DROP_MIN, (cold, pid)
    assert free >= FREE_MIN, results["cmpo-no-cost"]
    assert min(results[k]["fr"] for k in ("cold-start", "cmpo-pid", "cmpo-no-cost")) >= FR_MIN
    for name in ("report.md", "cost_control.png", "pareto.png", "cmpo-pid/final/config.json"):
        assert (out / name).is_file(), name

    # finished: a second call retrains nothing and reports the same numbers
    proc = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "== cmpo-pid" in proc.stdout
    assert json.loads((out / "results.json").read_text())["policies"] == results
