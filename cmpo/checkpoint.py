"""Checkpoints of a CMPO run, written atomically.

A checkpoint is the folder ``output_dir/checkpoint-<step>/`` holding what ``accelerate`` saves
(``Accelerator.save_state``: model, optimiser, the registered scheduler, and every process's RNG
states: python, numpy, torch, CUDA) plus ``trainer_state.json`` (the step, the full cost-controller
state, the config). It is first written to ``output_dir/.checkpoint-<step>.tmp/`` and renamed into
place once complete, so a kill during a write leaves the previous checkpoint intact and usable;
:func:`latest_checkpoint` only considers complete ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of ``output_dir``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _PATTERN.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of ``output_dir``, or ``None``."""
    found = checkpoints(output_dir)
    return found[-1] if found else None


def read_state(checkpoint: str | Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint."""
    return json.loads((Path(checkpoint) / STATE_FILE).read_text(encoding="utf-8"))


def save_checkpoint(accelerator, output_dir: str | Path, step: int, state: dict[str, Any], *,
                    total_limit: int | None = None) -> Path:
    """Write ``checkpoint-<step>`` atomically (every process calls this); returns its path.

    ``state`` (JSON types) goes to ``trainer_state.json`` next to what ``accelerator.save_state``
    writes. With ``total_limit``, older checkpoints beyond that many are removed afterwards.
    """
    root = Path(output_dir)
    final = root / f"checkpoint-{step}"
    tmp = root / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left by a run killed while writing
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(tmp / STATE_FILE, {**state, "step": int(step)})
        old = None
        if final.exists():  # the same step saved again (e.g. after a resume): swap it out
            old = root / f".checkpoint-{step}.old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if total_limit is not None:
            for stale in checkpoints(root)[:-total_limit]:
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, checkpoint: str | Path) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote (after ``accelerator.prepare``); returns the state."""
    path = Path(checkpoint)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    accelerator.load_state(str(path))
    return read_state(path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
