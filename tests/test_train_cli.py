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


def _launch(tiny_model_dir, out, *extra):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "cmpo.train", "--config", str(ROOT / "examples" / "cmpo_tiny_cpu.yaml"),
           "--output_dir", str(out), "--model_name_or_path", tiny_model_dir, "--build_tiny_model", "false",
           "--env_kwargs", '{"split": "train", "process_judge": "rule", "max_turns": 4}',
           "--group_size", "2", "--groups_per_step", "2", "--max_new_tokens", "12", "--micro_batch_size", "2",
           "--save_steps", "1", "--lambda_init", "0.5", "--pid_kp", "1.0", "--pid_ki", "0.1", "--pid_kd", "0.0",
           "--disable_tqdm", "true", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_fds_training_through_the_cli_writes_checkpoints_and_resumes(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    _launch(tiny_model_dir, out, "--max_steps", "2")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert math.isfinite(r["loss/loss"]) and math.isfinite(r["loss/entropy"])
        assert 1 <= r["rollout/satisfaction"] <= 5 and 0 <= r["rollout/outcome"] <= 1
        assert r["rollout/finished_rate"] == 0.0  # random text never follows the FDS protocol...
        assert r["rollout/session_cost"] == 0.0  # ...so no voucher is ever issued: J_C = 0 < d = 0.3
        assert 0 < r["perf/env_fraction"] < 1 and r["perf/tokens_per_s"] > 0
        assert 0 <= r["rollout/process_reward"] <= 1  # the example attaches the rule-based judge
    # PID with J = 0 below d: e = -0.3, I_k = max(0, 0.5 - 0.03 k), λ_k = kp·e + I_k
    assert [r["cost/lambda"] for r in records] == pytest.approx([0.17, 0.14])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["controller"]["name"] == "pid" and state["controller"]["state"]["integral"] == pytest.approx(0.44)
    assert list(out.glob("cmpo/**/events.out.tfevents.*")) and (out / "training.png").exists()
    assert (out / "final" / "model.safetensors").exists()
    dialogue = json.loads((out / "dialogues.jsonl").read_text().splitlines()[0])
    assert dialogue["messages"][0]["role"] == "system" and "SOP" in dialogue["messages"][0]["content"]

    proc = _launch(tiny_model_dir, out, "--max_steps", "3", "--resume", "true")
    assert "resumed from" in proc.stdout and "checkpoint-2 at step 2" in proc.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[2]["cost/lambda"] == pytest.approx(0.11)  # the PID state came back with the checkpoint
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
