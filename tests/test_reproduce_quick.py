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


@pytest.mark.slow
def test_quick_reproduction_pid_lowers_the_voucher_rate_toward_the_budget(tmp_path):
    """QUICK_DOCSTRING"""
    out = tmp_path / "quick"
    cmd = [sys.executable, "-m", "cmpo.reproduce", "--quick", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())["policies"]
    cold, pid, free = (results[k]["v_rate"] / 100 for k in ("cold-start", "cmpo-pid", "cmpo-no-cost"))
    assert cold >= COLD_MIN, results["cold-start"]
    assert pid <= PID_MAX and pid < cold - DROP_MIN, (cold, pid)
    assert free >= FREE_MIN, results["cmpo-no-cost"]
    assert min(results[k]["fr"] for k in ("cold-start", "cmpo-pid", "cmpo-no-cost")) >= 80.0
    for name in ("report.md", "cost_control.png", "pareto.png", "cmpo-pid/final/config.json"):
        assert (out / name).is_file(), name

    # finished: a second call retrains nothing and reports the same numbers
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "== cmpo-pid" in proc.stdout
    assert json.loads((out / "results.json").read_text())["policies"] == results
