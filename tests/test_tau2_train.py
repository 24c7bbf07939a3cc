"""The example CMPO config on a τ² train split, through the real ``cmpo.train`` CLI: a tiny local
model on a CPU against Tau2-Retail-v0 (scripted user), one step. Shows the env is trainable: text
in, text out, the official reward on the last turn, the cost per turn."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from tau2_support import requires_tau2

pytestmark = [pytest.mark.tau2, requires_tau2, pytest.mark.slow]
pytest.importorskip("torch")
pytest.importorskip("trl")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ["I want to return an item.", "It is order #W2378156.", "Yes please."]


def test_cmpo_trains_on_a_tau2_train_split(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    env_kwargs = {"split": "train", "user_simulator": "scripted",
                  "user_simulator_kwargs": {"script": SCRIPT}, "cost_weights": {"refund": 0.001}}
    cmd = [sys.executable, "-m", "cmpo.train", "--config",
           str(ROOT / "examples" / "cmpo_tau2_airline.yaml"),
           "--env_id", "Tau2-Retail-v0", "--env_kwargs", json.dumps(env_kwargs),
           "--output_dir", str(out), "--model_name_or_path", tiny_model_dir,
           "--engine", "transformers", "--bf16", "false", "--gradient_checkpointing", "false",
           "--max_seq_len", "10240", "--max_turns", "3", "--max_new_tokens", "12",  # the tiny tokenizer (FDS data) spends ~8.1k tokens on the opening
           "--group_size", "2", "--groups_per_step", "1", "--micro_batch_size", "2",
           "--max_steps", "1", "--save_steps", "1", "--report_to", "none", "--plot", "false",
           "--disable_tqdm", "true"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    [record] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 1 and math.isfinite(record["loss/loss"])
    assert record["cost/limit"] == 0.5  # the example's budget
    assert record["rollout/turns"] == 3.0 and record["rollout/outcome"] == 0.0
    assert record["rollout/session_cost"] == 0.0  # random text never calls a refunding tool
    dialogue = json.loads((out / "dialogues.jsonl").read_text().splitlines()[0])
    system, greeting, opening = dialogue["messages"][:3]
    assert "<policy>" in system["content"] and '"name": "return_delivered_order_items"' in (
        system["content"])
    assert greeting == {"role": "assistant", "content": "Hi! How can I help you today?"}
    assert opening == {"role": "user", "content": SCRIPT[0]}
    assert dialogue["termination_reason"] in ("user_stop", "max_turns")
