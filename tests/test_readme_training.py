"""Every CPU command of the README's "Training with CMPO" section runs, in the order written, in a
fresh folder (as on a fresh clone): no command needs a file a later one writes, no two collide on an
output folder. Each runs with flags that shrink it (fewer episodes, steps and users) so that the
whole sequence takes a few minutes; the flags only add, the README's own arguments are kept."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

ROOT = Path(__file__).resolve().parents[1]
SMALL_TRAIN = ["--max_steps", "1", "--group_size", "2", "--groups_per_step", "1", "--num_mini_batches", "1",
               "--micro_batch_size", "2", "--max_new_tokens", "24", "--report_to", "none", "--plot", "false",
               "--disable_tqdm", "true",
               "--env_kwargs", '{"split": "train", "process_judge": "rule", "max_turns": 2}']
#: Module -> flags appended to shrink its run.
SHRINK = {
    "cmpo.cold_start": ["--episodes", "6", "--epochs", "1"],
    "cmpo.evaluate_policy": ["--users", "2", "--max-new-tokens", "24"],
    "cmpo.train": SMALL_TRAIN,
    "cmpo.reproduce": ["--steps", "1", "--demos", "6", "--sft-epochs", "1", "--users", "2", "--seeds", "1"],
    "cmpo.sft data": ["--episodes", "4"],
    "cmpo.sft train": ["--max_steps", "1", "--gradient_checkpointing", "false"],
    "cmpo.tiny_model": [],
}


def training_commands() -> list[str]:
    """The ``python -m`` lines of the section's bash blocks, comments removed, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Training with CMPO\n")
    section = text[start:text.index("\n## ", start + 1)]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("python -m "):
                lines.append(line)
    return lines


def _module(argv: list[str]) -> str:
    return f"{argv[2]} {argv[3]}" if argv[2] == "cmpo.sft" else argv[2]


def test_the_section_lists_the_cold_start_recipe_first():
    modules = [_module(shlex.split(c)) for c in training_commands()]
    assert modules[:5] == ["cmpo.cold_start", "cmpo.evaluate_policy", "cmpo.train", "cmpo.train",
                           "cmpo.evaluate_policy"]
    assert "cmpo.reproduce" in modules and set(modules) <= set(SHRINK)


@pytest.mark.slow
def test_readme_training_commands_run_in_order_on_a_fresh_folder(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for command in training_commands():
        argv = shlex.split(command)
        module = _module(argv)
        if "my_package" in command:
            continue  # the illustration of a third-party env, not a runnable recipe
        if module == "cmpo.reproduce" and "--quick" not in argv:
            continue  # the full run is the quick one with more variants: same code path, hours of CPU
        cmd = [sys.executable, *argv[1:], *SHRINK[module]]
        proc = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert (tmp_path / "runs" / "cold-start" / "final" / "config.json").is_file()
    assert (tmp_path / "runs" / "cmpo-tiny-cpu" / "final").is_dir()
    assert (tmp_path / "runs" / "reproduce-quick" / "report.md").is_file()
