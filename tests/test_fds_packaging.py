"""A plain (non-editable) install ships the FDS data files and the registry table."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                 ".pytest_cache", "runs", "results")

CHECK = """
import sys, gymnasium as gym
import interactcs_gym
assert interactcs_gym.__file__.startswith(sys.argv[1]), interactcs_gym.__file__
for env_id in ("FDS-Hard-v0", "FDS-Easy-v0"):
    env = gym.make("interactcs_gym:" + env_id)
    obs, info = env.reset(seed=0)
    obs, r, term, trunc, info = env.step("<think>x</think><response>Sorry! What happened?</response><action>chat</action>")
    assert isinstance(obs, str) and info["format_ok"], info
env = gym.make("FDS-Easy-v0", split="train")
assert len(env.unwrapped.users) == 2000
assert "torch" not in sys.modules
print("installed ok")
"""


@pytest.mark.slow
def test_wheel_ships_data_and_registry(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_IGNORE, symlinks=True)  # build from a clean copy
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(wheels), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("interactcs_rl-*.whl"))
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                              str(target), str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    data = target / "interactcs_gym" / "fds" / "data"
    for name in ("orders.json", "personas.json", "splits.json", "persona_lexicon.yaml",
                 "persona_utterances.yaml"):
        assert (data / name).is_file(), f"{name} missing from the wheel"
    assert (target / "interactcs_gym" / "envs_registry.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, "-c", CHECK, str(target)], capture_output=True, text=True,
                         cwd=str(elsewhere), env={"PYTHONPATH": str(target)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "installed ok"
