"""Input checks shared by the CMPO maths modules: bad numbers fail loudly, naming the argument."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def finite_float(name: str, value) -> float:
    """``float(value)``, or ValueError naming ``name`` when it is not a finite real number."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def finite_array(name: str, values, *, ndim: int | None = None) -> np.ndarray:
    """``values`` as a float64 array; ValueError names ``name`` and the first non-finite entry."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of real numbers, got {values!r}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        index = "".join(f"[{i}]" for i in where)
        raise ValueError(f"{name} must be finite, got {arr[where]} at {name}{index}")
    return arr


def finite_ragged(name: str, rows: Sequence) -> list[np.ndarray]:
    """A list of 1-D float64 arrays (one per rollout, lengths may differ).

    ValueError names the bad entry, e.g. ``process[1][2]``.
    """
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence | np.ndarray):
        raise ValueError(f"{name} must be a sequence of per-turn sequences, "
                         f"got {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        try:
            arr = np.asarray(row, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name}[{i}] must be a sequence of real numbers, "
                             f"got {row!r}") from None
        if arr.ndim != 1:
            raise ValueError(f"{name}[{i}] must be 1-dimensional (one value per turn), "
                             f"got shape {arr.shape}")
        out.append(arr)
    # One finiteness check for the whole group; locate the culprit only when there is one.
    if out and not np.isfinite(np.concatenate(out)).all():
        for i, arr in enumerate(out):
            finite_array(f"{name}[{i}]", arr)
    return out
