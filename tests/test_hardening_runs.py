"""Hardening, points 5-7 of the issue: resume survives a damaged checkpoint (manifest, fallback,
exact RNG), every bad CLI input is one line on stderr, async vector envs and a silent check_env."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import interactcs_gym  # noqa: F401  (registers the ids)
from cmpo.checkpoint import (MANIFEST_FILE, CheckpointError, _manifest, _write_json,
                             latest_intact_checkpoint, load_checkpoint, verify_checkpoint)

ROOT = Path(__file__).resolve().parents[1]
GOOD = "<think>t</think><response>Sorry about that. Could you send a photo?</response><action>chat</action>"


# ---------------------------------------------------------------------- point 5: checkpoints
def fake_checkpoint(root: Path, step: int, files: dict[str, bytes]) -> Path:
    """A checkpoint folder as save_checkpoint leaves it: files, then the manifest."""
    folder = root / f"checkpoint-{step}"
    for name, data in {"trainer_state.json": json.dumps({"step": step}).encode(), **files}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    _write_json(folder / MANIFEST_FILE, {"format": 1, "files": _manifest(folder)})
    return folder


def files(seed: int) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {"model.safetensors": rng.bytes(4096), "optimizer.bin": rng.bytes(2048),
            "random_states_0.pkl": rng.bytes(300), "scheduler.bin": rng.bytes(100),
            "sub/extra.bin": rng.bytes(10)}


@pytest.mark.parametrize("seed", range(3))
def test_any_damaged_file_is_named_and_resume_falls_back_to_the_newest_intact(tmp_path, seed):
    rng = random.Random(seed)
    for step in (1, 2, 3):
        fake_checkpoint(tmp_path, step, files(step))
    assert verify_checkpoint(tmp_path / "checkpoint-3") is None
    for name in ["trainer_state.json", *files(0)]:
        target = tmp_path / "checkpoint-3" / name
        original = target.read_bytes()
        damage = rng.choice(["truncate", "flip", "delete"])
        if damage == "truncate":
            target.write_bytes(original[:rng.randrange(len(original))])
        elif damage == "flip":
            i = rng.randrange(len(original))
            target.write_bytes(original[:i] + bytes([original[i] ^ 0xFF]) + original[i + 1:])
        else:
            target.unlink()
        problem = verify_checkpoint(tmp_path / "checkpoint-3")
        assert problem is not None and name in problem
        with pytest.warns(UserWarning, match=f"checkpoint-3: .*{name}"):
            assert latest_intact_checkpoint(tmp_path).name == "checkpoint-2"
        target.write_bytes(original)
    assert latest_intact_checkpoint(tmp_path).name == "checkpoint-3"


def test_no_intact_checkpoint_is_one_clear_error(tmp_path):
    assert latest_intact_checkpoint(tmp_path) is None  # no run at all: start fresh
    fake_checkpoint(tmp_path, 1, files(1))
    (tmp_path / "checkpoint-1" / "model.safetensors").write_bytes(b"half")
    fake_checkpoint(tmp_path, 2, files(2))
    (tmp_path / "checkpoint-2" / MANIFEST_FILE).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match=r"no intact checkpoint .*checkpoint-2: no manifest.json; "
                                                  r"checkpoint-1: model.safetensors has 4 bytes"):
            latest_intact_checkpoint(tmp_path)


class FakeAccelerator:
    """What load_checkpoint uses of an Accelerator; ``restores`` says whether load_state sets
    the RNG states from the file (as accelerate does) or, like accelerate on a file it cannot
    use, only logs."""

    def __init__(self, restores: bool, process_index: int = 0) -> None:
        self.restores, self.process_index = restores, process_index

    def load_state(self, path: str) -> None:
        import torch

        if self.restores:
            states = torch.load(Path(path) / f"random_states_{self.process_index}.pkl", weights_only=False)
            random.setstate(states["random_state"])
            np.random.set_state(states["numpy_random_seed"])
            torch.set_rng_state(states["torch_manual_seed"])


def rng_checkpoint(root: Path) -> Path:
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.save({"random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
                "torch_manual_seed": torch.get_rng_state()}, buffer)
    return fake_checkpoint(root, 1, {"random_states_0.pkl": buffer.getvalue()})


def test_an_rng_state_that_is_not_restored_is_an_error(tmp_path):
    torch = pytest.importorskip("torch")
    folder = rng_checkpoint(tmp_path)
    saved = (random.random(), float(np.random.random()), float(torch.rand(1)))
    assert load_checkpoint(FakeAccelerator(restores=True), folder)["step"] == 1
    assert (random.random(), float(np.random.random()), float(torch.rand(1))) == saved  # exact
    with pytest.raises(CheckpointError, match="RNG state in random_states_0.pkl was not restored"):
        load_checkpoint(FakeAccelerator(restores=False), folder)
    with pytest.raises(CheckpointError, match="RNG state of process 1 cannot be read"):
        load_checkpoint(FakeAccelerator(restores=True, process_index=1), folder)


def _train_args(model_dir, out, **extra):
    values = dict(output_dir=str(out), model_name_or_path=model_dir,
                  env_id="tests.toy_text_env:ToyKeyword-v0", env_kwargs='{"max_turns": 2, "long_turn_chars": 12}',
                  group_size=2, groups_per_step=2, max_new_tokens=6, max_steps=3, learning_rate=1e-2,
                  cost_limit=0.5, micro_batch_size=2, save_steps=1, report_to="none",
                  disable_tqdm=True, plot=False)
    values.update(extra)
    return [x for k, v in values.items() for x in (f"--{k}", str(v))]


def _records(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_accelerate_state")
def test_resume_past_a_damaged_rng_file_is_exact_and_no_intact_checkpoint_stops_with_one_line(
        tmp_path, tiny_model_dir):
    pytest.importorskip("trl")
    from accelerate.state import AcceleratorState

    from cmpo.train import main

    main(_train_args(tiny_model_dir, tmp_path / "straight"))
    AcceleratorState._reset_state(reset_partial_state=True)
    run = tmp_path / "run"
    main(_train_args(tiny_model_dir, run, max_steps=2))
    rng_file = run / "checkpoint-2" / "random_states_0.pkl"
    rng_file.write_bytes(rng_file.read_bytes()[:40])  # the newest checkpoint's RNG file, cut short
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.warns(UserWarning, match="checkpoint-2: random_states_0.pkl has 40 bytes"):
        main(_train_args(tiny_model_dir, run, resume="true"))
    straight, resumed = _records(tmp_path / "straight"), _records(run)
    assert [r["step"] for r in resumed] == [1, 2, 3]
    for key in ("cost/lambda", "loss/loss", "loss/grad_norm", "rollout/outcome", "rollout/session_cost"):
        assert [r[key] for r in resumed] == [r[key] for r in straight], key

    for folder in run.glob("checkpoint-*"):
        (folder / "model.safetensors").write_bytes(b"")
    AcceleratorState._reset_state(reset_partial_state=True)
    with warnings.catch_warnings(), pytest.raises(SystemExit) as stop:
        warnings.simplefilter("ignore")
        main(_train_args(tiny_model_dir, run, resume="true", max_steps=4))
    message = str(stop.value.code)
    assert message.startswith("error: no intact checkpoint in") and "\n" not in message


# ---------------------------------------------------------------------- point 6: CLIs
def _cli(*args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def _one_line_error(proc, *fragments):
    assert proc.returncode not in (0, None), proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_evaluate_bad_inputs_are_one_line_and_leave_no_files(tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    base = ["-m", "interactcs_gym.evaluate", "--env", "FDS-Hard-v0", "--agent", "sop", "--users", "1",
            "--seeds", "1", "--no-progress", "--quiet"]
    cases = [
        (["--env-kwargs", '{"difficulty": "impossible"}', "--out", "r.jsonl"], "difficulty must be one of"),
        (["--out", "a-file/r.jsonl"], "a-file is a file, not a folder"),
        (["--out", "a-folder"], "is a folder"),
        (["--out", "/proc/r.jsonl"], "cannot write in /proc"),
        (["--env", "No-Such-v0", "--out", "r.jsonl"], "unknown env id"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for extra, fragment in cases:
        _one_line_error(_cli(*base, *extra, cwd=tmp_path), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no results, no stray lock
    assert sorted(p.name for p in (tmp_path / "a-folder").iterdir()) == []
    debug = _cli(*base, "--env-kwargs", '{"difficulty": "impossible"}', "--out", "r.jsonl", "--debug", cwd=tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_train_bad_inputs_are_one_line_before_the_model_loads(tmp_path):
    pytest.importorskip("trl")
    base = ["-m", "cmpo.train", "--config", str(ROOT / "examples" / "cmpo_tiny_cpu.yaml"),
            "--output_dir", str(tmp_path / "run")]
    cases = [
        (["--model_name_or_path", "./no-such-model", "--build_tiny_model", "false"], "no such folder"),
        (["--env_id", "No-Such-v0"], "env_id 'No-Such-v0'"),
        (["--env_id", "CartPole-v1", "--env_kwargs", "{}"], "is not a text env"),
        (["--env_kwargs", '{"difficulty": "impossible"}'], "difficulty must be one of"),
    ]
    for extra, fragment in cases:
        _one_line_error(_cli(*base, *extra, cwd=tmp_path), fragment)
    assert not (tmp_path / "run").exists()
    refused = _cli(*base, "--group_size", "1", cwd=tmp_path)
    assert refused.returncode == 1 and "group_size must be >= 2" in refused.stderr and "zero advantages" in refused.stderr


def test_light_install_is_told_which_extra_to_install(tmp_path):
    proc = _cli("-c", "import sys; sys.modules['trl'] = None\nfrom cmpo.train import main\nmain(['--max_steps', '1'])",
                cwd=tmp_path)
    _one_line_error(proc, "needs the training extra", "pip install 'interactcs-rl[train]'")


# ---------------------------------------------------------------------- point 7: vector envs
def test_async_vector_env_with_default_arguments_matches_sync():
    # (no episode ends here: gymnasium cannot batch an info key that is an int in one env and
    # None in another, such as FDS's final satisfaction)
    actions = [GOOD, "not the protocol \u2028 😀", GOOD]
    results = {}
    for mode in ("sync", "async"):
        envs = gym.make_vec("FDS-Hard-v0", num_envs=3, vectorization_mode=mode)
        try:
            obs, _ = envs.reset(seed=5)
            trace = [tuple(obs)]
            for action in actions:
                obs, reward, terminated, truncated, info = envs.step((action,) * 3)
                trace.append((tuple(obs), tuple(reward), tuple(info["cost"])))
        finally:
            envs.close()
        results[mode] = trace
    assert results["async"] == results["sync"]
    assert all(isinstance(o, str) and o for o in results["async"][0])


def test_shared_memory_round_trips_any_string_up_to_the_bound():
    from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

    from interactcs_gym.core.spaces import UnicodeText

    space = UnicodeText(16)
    memory = create_shared_memory(space, n=3)
    view = read_from_shared_memory(space, memory, n=3)
    texts = ["", "\x00tail", "héllo 😀 你好\u2028!!"[:16]]
    for i, text in enumerate(texts):
        write_to_shared_memory(space, i, text, memory)
    assert tuple(view) == tuple(texts)  # the view is live
    import copy

    assert copy.deepcopy(view) == tuple(texts) and type(copy.deepcopy(view)) is tuple
    with pytest.raises(ValueError, match="cannot hold"):
        write_to_shared_memory(space, 0, "x" * 17, memory)


def test_check_env_prints_nothing():
    from gymnasium.utils.env_checker import check_env

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("FDS-Hard-v0").unwrapped)
    assert out.getvalue() == "" and err.getvalue() == ""


def test_human_mode_prints_each_steps_new_messages(capsys):
    env = gym.make("FDS-Hard-v0", render_mode="human")
    obs, _ = env.reset(seed=0)
    assert capsys.readouterr().out == "" and env.render() is None
    reply, *_ = env.step(GOOD)
    printed = capsys.readouterr().out
    assert printed == f"[user] {obs}\n[assistant] {GOOD}\n[user] {reply}\n"


def test_async_vector_envs_run_past_episodes_that_end_at_different_steps():
    """``satisfaction`` is there on the last step only, so the vector env batches it with a mask
    (``info["_satisfaction"]``) instead of failing on an ``int`` beside a ``None``; envs reset
    themselves (gymnasium's next-step autoreset) and play on."""
    voucher = ("<think>x</think><response>I am sorry. I have issued a voucher for you.</response>"
               "<action>voucher</action>")
    ask = ("<think>x</think><response>I am sorry about that. Could you send a photo of the order?"
           "</response><action>chat</action>")
    envs = gym.make_vec("FDS-Hard-v0", num_envs=3, vectorization_mode="async", max_turns=4)
    ended = []
    try:
        envs.reset(seed=1)
        for _ in range(9):
            _, _, terminated, truncated, info = envs.step((voucher, ask, "nonsense"))
            done = terminated | truncated
            if done.any():
                assert list(info["_satisfaction"]) == list(done)
                assert all(1 <= s <= 5 for s in info["satisfaction"][done])
                ended.append(tuple(done))
    finally:
        envs.close()
    assert len(set(ended)) > 1  # the envs' episodes ended at different steps (seeded)
