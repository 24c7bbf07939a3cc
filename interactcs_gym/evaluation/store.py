"""The results file: JSON Lines, one record per line, appended as episodes finish.

Record kinds (field ``record``):

* ``"run"``: written when an evaluation starts or resumes: ``config_hash``, the (redacted)
  ``config``, the planned ``users`` x ``seeds``, how many episodes were already recorded, versions.
* ``"episode"``: one finished episode (see :func:`interactcs_gym.evaluation.runner.run_episode` for
  the fields): its key is ``(config_hash, user_index, seed_index)``.
* ``"repair"``: written when a run finds the file's last line cut short (the previous run was
  killed while writing it). The partial line is removed from the end of the file and kept, verbatim,
  in this record's ``dropped_text``; the episode it belonged to is run again.

Every line is written with one ``write`` and then ``flush`` + ``os.fsync``, so a killed run loses at
most the episode in progress. A second process writing the same file is refused (an exclusive
``flock`` on ``<file>.lock``). A malformed line anywhere but at the end is not a kill artefact: it is
reported with its line number and the file is left untouched.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

try:  # POSIX advisory locks; elsewhere the lock is skipped.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 1


class ResultsFileError(RuntimeError):
    """A results file that cannot be used as is (corrupt line, locked, mismatched run)."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays become numbers/lists, NaN/inf become ``None``,
    other objects their ``repr``."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and getattr(value, "shape", None) == ():
        return to_jsonable(item())
    tolist = getattr(value, "tolist", None)  # numpy array
    if callable(tolist):
        return to_jsonable(tolist())
    return repr(value)


def dumps_line(record: dict[str, Any]) -> str:
    return json.dumps(to_jsonable(record), ensure_ascii=False, allow_nan=False) + "\n"


@dataclass
class ResultsFile:
    """What :func:`read_results` found in a file."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    #: The last line, cut short (no newline, not valid JSON), if any: (byte offset, raw bytes).
    truncated_tail: tuple[int, bytes] | None = None
    #: True when the last line is a complete record that lacks only its newline.
    missing_final_newline: bool = False

    def episodes(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("record") == "episode"]

    def runs(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("record") == "run"]


def read_results(path: str | os.PathLike[str]) -> ResultsFile:
    """Parse a results file; a cut-short last line is reported in ``truncated_tail``, not parsed."""
    path = Path(path)
    result = ResultsFile(path)
    if not path.exists():
        return result
    data = path.read_bytes()
    lines = data.split(b"\n")
    offset = 0
    for number, raw in enumerate(lines, start=1):
        is_last = number == len(lines)
        if is_last and not raw:
            break
        if not raw.strip():
            offset += len(raw) + 1
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except (UnicodeDecodeError, ValueError) as exc:
            if is_last:  # no newline after it: the writer was killed mid-line
                result.truncated_tail = (offset, raw)
                break
            raise ResultsFileError(
                f"{path}: line {number} is not a valid record ({exc}). Only the last line can be "
                f"cut short by a killed run; this one is followed by other lines, so the file was "
                f"edited or damaged. Fix or delete that line, or write to another --out."
            ) from exc
        result.records.append(record)
        if is_last:
            result.missing_final_newline = True
        offset += len(raw) + 1
    return result


class ResultsStore:
    """An open results file a run appends to: locked, repaired, loaded.

    >>> with ResultsStore("results/run.jsonl") as store:   # doctest: +SKIP
    ...     store.append({"record": "episode", ...})
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        self.repairs: list[dict[str, Any]] = []
        self._fh = None
        self._lock_fh = None

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> "ResultsStore":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            loaded = read_results(self.path)
            self.records = loaded.records
            if loaded.missing_final_newline:
                with open(self.path, "ab") as fh:
                    fh.write(b"\n")
                    _sync(fh)
            if loaded.truncated_tail is not None:
                self._repair_tail(*loaded.truncated_tail, line=len(loaded.records) + 1)
            self._fh = open(self.path, "a", encoding="utf-8")
        except BaseException:
            self._release_lock()
            raise
        return self

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._release_lock()

    def __enter__(self) -> "ResultsStore":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write one record as one line, flushed and fsynced before returning."""
        if self._fh is None:
            raise RuntimeError("ResultsStore.append() before open()")
        line = dumps_line(record)
        self._fh.write(line)
        _sync(self._fh)
        stored = json.loads(line)
        self.records.append(stored)
        return stored

    def _repair_tail(self, offset: int, raw: bytes, *, line: int) -> None:
        """Replace a cut-short last line by a ``repair`` record that keeps its bytes verbatim."""
        repair = {
            "record": "repair",
            "schema": SCHEMA_VERSION,
            "at": utc_now(),
            "line": line,
            "offset": offset,
            "dropped_bytes": len(raw),
            "dropped_text": raw.decode("utf-8", errors="replace"),
            "reason": "the last line was cut short (no newline, not valid JSON): the run that wrote "
                      "it was killed mid-write; its episode is not counted and is run again",
        }
        with open(self.path, "r+b") as fh:
            fh.seek(offset)
            fh.write(dumps_line(repair).encode("utf-8"))
            fh.truncate()
            _sync(fh)
        self.records.append(repair)
        self.repairs.append(repair)
        print(f"warning: {self.path}: line {line} was cut short by a killed run ({len(raw)} bytes); "
              f"moved into a 'repair' record, its episode will be run again", file=sys.stderr)

    # ------------------------------------------------------------------ queries
    def episodes(self, config_hash: str | None = None) -> Iterator[dict[str, Any]]:
        for r in self.records:
            if r.get("record") == "episode" and (config_hash is None or r.get("config_hash") == config_hash):
                yield r

    # ------------------------------------------------------------------ locking
    def _acquire_lock(self) -> None:
        if fcntl is None:
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        fh = open(lock_path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise ResultsFileError(
                f"{self.path} is being written by another evaluation (lock {lock_path} is held); "
                f"wait for it to finish or use another --out") from None
        self._lock_fh = fh

    def _release_lock(self) -> None:
        if self._lock_fh is not None:
            if fcntl is not None:
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None


def latest_by_key(episodes: Iterator[dict[str, Any]] | list[dict[str, Any]]
                  ) -> dict[tuple[int, int], dict[str, Any]]:
    """Episode records by ``(user_index, seed_index)``; a later line for a key supersedes an
    earlier one (only ``--retry-errors`` writes a second line for a key)."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for r in episodes:
        out[(int(r["user_index"]), int(r["seed_index"]))] = r
    return out


def _sync(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())
