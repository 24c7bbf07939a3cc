"""Checkpoints of a CMPO run, written atomically.

A checkpoint is the folder ``output_dir/checkpoint-<step>/`` holding what ``accelerate`` saves
(``Accelerator.save_state``: model, optimiser, the registered scheduler, and every process's RNG
states: python, numpy, torch, CUDA) plus ``trainer_state.json`` (the step, the full cost-controller
state, the config). It is first written to ``output_dir/.checkpoint-<step>.tmp/`` and renamed into
place once complete, so a kill during a write leaves the previous checkpoint intact and usable;
:func:`latest_checkpoint` only considers complete ones.

**Manifest.** The last file written into a checkpoint is ``manifest.json``: the size and SHA-256
of every other file. :func:`verify_checkpoint` checks it (each file present, same size, same
hash); :func:`latest_intact_checkpoint`, used by ``--resume``, takes the newest checkpoint that
verifies, warning about each newer one with what is wrong with it, and raises
:class:`CheckpointError` when checkpoints exist but none is intact. Hashing reads every file
once at save and once at resume (about a second per GB).

**RNG state.** :func:`load_checkpoint` restores this process's python, numpy and torch RNG
states through ``accelerate`` and then checks they equal the saved ones: ``accelerate`` only logs
an RNG file it cannot read, which would silently break the exact resume, so here it is a
:class:`CheckpointError` (e.g. resuming with more processes than the run was saved with).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
_PATTERN = re.compile(r"^checkpoint-(\d+)$")
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (damaged, incomplete, or its RNG state not restorable)."""


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


def latest_intact_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint of ``output_dir`` whose manifest verifies, or ``None`` when there is
    no checkpoint at all. Each newer, damaged one gets a warning saying what is wrong with it;
    :class:`CheckpointError` when there are checkpoints and none is intact."""
    found = checkpoints(output_dir)
    problems = []
    for path in reversed(found):
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        problems.append(f"{path.name}: {problem}")
        warnings.warn(f"skipping damaged checkpoint {path}: {problem}", stacklevel=2)
    if problems:
        raise CheckpointError(f"no intact checkpoint in {output_dir} ({'; '.join(problems)})")
    return None


def verify_checkpoint(checkpoint: str | Path) -> str | None:
    """What is wrong with ``checkpoint`` according to its manifest, in words; ``None`` if intact."""
    path = Path(checkpoint)
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict) or STATE_FILE not in files:
            raise ValueError("it lists no trainer state")
    except FileNotFoundError:
        return f"no {MANIFEST_FILE}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable {MANIFEST_FILE} ({type(exc).__name__}: {exc})"
    for name, entry in sorted(files.items()):
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != entry.get("size"):
            return f"{name} has {size} bytes, the manifest says {entry.get('size')}"
        if _sha256(file) != entry.get("sha256"):
            return f"{name} does not match its checksum"
    return None


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
        _write_json(tmp / MANIFEST_FILE, {"format": 1, "files": _manifest(tmp)})  # written last
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
    """Restore what :func:`save_checkpoint` wrote (after ``accelerator.prepare``); returns the state.

    :class:`CheckpointError` when the manifest does not verify or this process's RNG state cannot
    be restored exactly (module docstring).
    """
    path = Path(checkpoint)
    problem = verify_checkpoint(path)
    if problem is not None:
        raise CheckpointError(f"{path} is damaged: {problem}")
    rng_file = path / f"random_states_{accelerator.process_index}.pkl"
    try:
        saved = _load_rng(rng_file)
    except Exception as exc:
        raise CheckpointError(f"{path}: the RNG state of process {accelerator.process_index} cannot be "
                              f"read from {rng_file.name} ({type(exc).__name__}); the resume would not "
                              "be exact") from None
    accelerator.load_state(str(path))
    if not _rng_restored(saved):
        raise CheckpointError(f"{path}: the RNG state in {rng_file.name} was not restored; the resume "
                              "would not be exact")
    return read_state(path)


def _load_rng(file: Path) -> dict[str, Any]:
    import torch

    states = torch.load(file, weights_only=False)
    missing = [k for k in ("random_state", "numpy_random_seed", "torch_manual_seed") if k not in states]
    if missing:
        raise KeyError(f"no {missing}")
    return states


def _rng_restored(saved: dict[str, Any]) -> bool:
    """Whether the live python, numpy and torch RNG states equal ``saved``."""
    import numpy as np
    import torch

    live_np, saved_np = np.random.get_state(), saved["numpy_random_seed"]
    return (random.getstate() == saved["random_state"]
            and all(np.array_equal(a, b) for a, b in zip(live_np, saved_np))
            and torch.equal(torch.get_rng_state(), saved["torch_manual_seed"]))


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file under ``folder`` (flushed to disk while read)."""
    out = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = file.relative_to(folder).as_posix()
        if name != MANIFEST_FILE:
            out[name] = {"size": file.stat().st_size, "sha256": _sha256(file, sync=True)}
    return out


def _sha256(file: Path, *, sync: bool = False) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
        if sync:
            os.fsync(fh.fileno())
    return digest.hexdigest()


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
