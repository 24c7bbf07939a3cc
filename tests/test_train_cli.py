"""The real CLI on FDS-Hard-v0 with the embedded simulator and a tiny local model:
``accelerate launch -m cmpo.train --config examples/cmpo_tiny_cpu.yaml`` for a few steps, then resumed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

ROOT = Path(__file__).resolve().parents[1]


def _launch(model_dir, out, *extra):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "cmpo.train", "--config", str(ROOT / "examples" / "cmpo_tiny_cpu.yaml"),
           "--output_dir", str(out), "--model_name_or_path", model_dir, "--build_tiny_model", "false",
           "--env_kwargs", '{"split": "train", "process_judge": "rule", "max_turns": 4}',
           "--group_size", "2", "--groups_per_step", "2", "--max_new_tokens", "72", "--micro_batch_size", "2",
           "--save_steps", "1", "--cost_limit", "0.1", "--lambda_init", "0.5", "--pid_kp", "0.1", "--pid_ki", "1.0", "--pid_kd", "0.0",
           "--log_dialogues", "4", "--disable_tqdm", "true", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _pid(costs, d=0.1, kp=0.1, ki=1.0, integral=0.5):
    """The PID-Lagrangian by hand (kd = 0, no smoothing): e_k = J_k - d, I_k = max(0, I_{k-1} + ki e_k),
    λ_k = max(0, kp e_k + I_k); returns the λ_k and the last I_k."""
    lambdas = []
    for cost in costs:
        error = cost - d
        integral = max(0.0, integral + ki * error)
        lambdas.append(max(0.0, kp * error + integral))
    return lambdas, integral


@pytest.mark.slow
def test_fds_training_through_the_cli_writes_checkpoints_and_resumes(tmp_path, voucher_model_dir):
    """A policy that issues vouchers (the tiny model taught the always-voucher agent's first turn,
    which ~76 % of its sessions issue): the session cost exceeds d = 0.1 (some session of the
    step's 4 issued one; all 4 miss with probability ~0.3 %), so λ rises, by the PID update of the
    observed costs."""
    out = tmp_path / "run"
    _launch(voucher_model_dir, out, "--max_steps", "2")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert math.isfinite(r["loss/loss"]) and math.isfinite(r["loss/entropy"])
        assert 1 <= r["rollout/satisfaction"] <= 5 and 0 <= r["rollout/outcome"] <= 1
        assert 0 < r["perf/env_fraction"] < 1 and r["perf/tokens_per_s"] > 0
        assert 0 <= r["rollout/process_reward"] <= 1  # the example attaches the rule-based judge
    costs = [r["rollout/session_cost"] for r in records]
    # 4 sessions a step, each costing 0 or 1: J_C > d means at least 1 voucher, and then
    # λ_k - λ_{k-1} = kp (e_k - e_{k-1}) + ki e_k >= 0.1 (0.15 - 0.9) + 0.15 > 0.
    assert all(cost > 0.1 for cost in costs), costs
    lambdas, integral = _pid(costs)
    assert [r["cost/lambda"] for r in records] == pytest.approx(lambdas)
    assert 0.5 < lambdas[0] < lambdas[1]  # λ_0 = lambda_init: λ strictly increases
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["controller"]["name"] == "pid" and state["controller"]["state"]["integral"] == pytest.approx(integral)
    assert list(out.glob("cmpo/**/events.out.tfevents.*")) and (out / "training.png").exists()
    assert (out / "final" / "model.safetensors").exists()
    dialogues = [json.loads(line) for line in (out / "dialogues.jsonl").read_text().splitlines()]
    assert dialogues[0]["messages"][0]["role"] == "system" and "SOP" in dialogues[0]["messages"][0]["content"]
    # every session is logged (4 a step), and each step's cost > d, so some logged session issued one
    issued = [d for d in dialogues if 1.0 in d["turn_costs"]]
    agent_turns = [m["content"] for m in issued[0]["messages"] if m["role"] == "assistant"]
    turn = agent_turns[issued[0]["turn_costs"].index(1.0)]  # the turn that issued the voucher
    assert turn.startswith("<think>") and "</think><response>" in turn and turn.endswith("<action>voucher</action>")

    proc = _launch(voucher_model_dir, out, "--max_steps", "3", "--resume", "true")
    assert "resumed from" in proc.stdout and "checkpoint-2 at step 2" in proc.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and math.isfinite(records[2]["loss/loss"])
    # the PID state (I_2) came back with the checkpoint: λ_3 continues from it
    assert records[2]["cost/lambda"] == pytest.approx(_pid([records[2]["rollout/session_cost"]], integral=integral)[0][0])
    assert (out / "checkpoint-3").exists()


@pytest.mark.slow
def test_two_processes_share_the_batch_and_resume(tmp_path, tiny_model_dir):
    """Data parallel on two CPU processes (gloo): each collects one of the two groups; λ comes from
    the mean cost of both; one log, one checkpoint with both processes' RNG states; resume."""
    import os

    out = tmp_path / "ddp"
    args = ["--output_dir", str(out), "--model_name_or_path", tiny_model_dir,
            "--env_id", "tests.toy_text_env:ToyKeyword-v0", "--env_kwargs", '{"max_turns": 2, "long_turn_chars": 0}',
            "--group_size", "2", "--groups_per_step", "2", "--max_new_tokens", "6", "--micro_batch_size", "2",
            "--learning_rate", "1e-3", "--cost_limit", "0.5", "--save_steps", "1", "--report_to", "none",
            "--disable_tqdm", "true", "--plot", "false"]

    def run(*extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29577",
               "-m", "cmpo.train", *args, *extra]
        env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    records = run("--max_steps", "2")
    assert [r["step"] for r in records] == [1, 2]  # written once, by the main process
    # 4 dialogues (2 per process) x 2 turns x at most 6 new tokens; a turn may end early at EOS.
    assert all(8 <= r["rollout/generated_tokens"] <= 4 * 2 * 6 for r in records)
    assert [r["rollout/turns"] for r in records] == [2.0, 2.0]
    assert [r["cost/lambda"] for r in records] == pytest.approx([1.65, 1.80])  # J_C = 2 over both processes
    assert {p.name for p in (out / "checkpoint-2").iterdir()} >= {"random_states_0.pkl", "random_states_1.pkl"}
    records = run("--max_steps", "3", "--resume", "true")
    assert [r["step"] for r in records] == [1, 2, 3] and records[2]["cost/lambda"] == pytest.approx(1.95)
