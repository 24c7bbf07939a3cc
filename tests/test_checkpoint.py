"""Checkpoints: atomic writes (a kill mid-write leaves the previous one usable) and exact resume
(4 steps straight == 2 steps + kill + resume + 2 steps)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from cmpo.checkpoint import checkpoints, latest_checkpoint  # noqa: E402


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

ROOT = Path(__file__).resolve().parents[1]
COMPARED = ("cost/lambda", "cost/pid_p", "cost/pid_i", "loss/loss", "loss/policy_loss", "loss/entropy",
            "loss/grad_norm", "loss/approx_kl", "rollout/outcome", "rollout/session_cost",
            "rollout/process_reward", "rollout/generated_tokens", "train/lr")


def _args(tiny_model_dir, out, **extra):
    values = dict(output_dir=str(out), model_name_or_path=tiny_model_dir,
                  env_id="tests.toy_text_env:ToyKeyword-v0", env_kwargs='{"max_turns": 2, "long_turn_chars": 12}',
                  group_size=2, groups_per_step=2, max_new_tokens=6, max_steps=4, learning_rate=1e-2,
                  cost_limit=0.5, micro_batch_size=2, save_steps=1, save_total_limit=2,
                  report_to="none", disable_tqdm=True, plot=False)
    values.update(extra)
    return [x for k, v in values.items() for x in (f"--{k}", str(v))]


def _records(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_latest_checkpoint_ignores_incomplete_ones(tmp_path):
    for name in ("checkpoint-1", "checkpoint-10", "checkpoint-2", ".checkpoint-11.tmp", "checkpoint-x"):
        (tmp_path / name).mkdir()
    for name in ("checkpoint-1", "checkpoint-2", ".checkpoint-11.tmp"):
        (tmp_path / name / "trainer_state.json").write_text("{}")
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2"]
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"  # 10 has no state file: incomplete
    assert latest_checkpoint(tmp_path / "missing") is None


@pytest.mark.slow
def test_kill_mid_write_then_resume_continues_exactly(tmp_path, tiny_model_dir):
    from cmpo.train import main

    # 4 steps straight
    straight = tmp_path / "straight"
    main(_args(tiny_model_dir, straight))

    # the same run, killed (SIGKILL) half-way through writing checkpoint-3 ...
    killed = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        import accelerate
        original = accelerate.Accelerator.save_state
        def save_state(self, output_dir=None, **kwargs):
            if str(output_dir).endswith(".checkpoint-3.tmp"):
                Path(output_dir).mkdir(parents=True, exist_ok=True)
                (Path(output_dir) / "model.safetensors").write_bytes(b"half a model")
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, output_dir, **kwargs)
        accelerate.Accelerator.save_state = save_state
        from cmpo.train import main
        main({_args(tiny_model_dir, killed)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert (killed / ".checkpoint-3.tmp").exists()  # the interrupted write
    assert latest_checkpoint(killed).name == "checkpoint-2"  # the previous one is intact
    assert [r["step"] for r in _records(killed)] == [1, 2, 3]

    # ... then resumed: steps 3 and 4 again, from checkpoint-2 (a fresh start there is refused)
    with pytest.raises(SystemExit, match="already holds a run .* --resume"):
        main(_args(tiny_model_dir, killed))
    main(_args(tiny_model_dir, killed) + ["--resume", "true"])
    a, b = _records(straight), _records(killed)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in COMPARED:
            assert rb[key] == pytest.approx(ra[key], rel=1e-6, abs=1e-7), (ra["step"], key)
    # λ moves when the cost exceeds d (the sequence compared is not trivial): PID, kp = 1, ki = 0.1
    over = [r for r in a if r["rollout/session_cost"] > 0.5]
    assert over and all(r["cost/lambda"] >= r["rollout/session_cost"] - 0.5 > 0 for r in over)
    assert not (killed / ".checkpoint-3.tmp").exists()  # cleaned by the next write of checkpoint-3
    assert [p.name for p in checkpoints(killed)] == ["checkpoint-3", "checkpoint-4"]  # save_total_limit

    from safetensors.torch import load_file

    wa = load_file(straight / "final" / "model.safetensors")
    wb = load_file(killed / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
