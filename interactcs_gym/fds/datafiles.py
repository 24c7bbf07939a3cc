"""Reading the FDS data files shipped in ``interactcs_gym/fds/data/`` and validating them.

Every file is validated on load with pydantic; a bad record raises :class:`DataFileError` naming the
file, the record and the field, e.g. ``orders.json: record 3 (order_id 'FD-100004'): field
'items.0.price': Input should be greater than 0 (got -1)``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class DataFileError(ValueError):
    """A shipped (or user-supplied) FDS data file is malformed; the message names file and field."""


def data_path(name: str) -> Any:
    """The packaged data file ``name`` (a Traversable: works from a wheel and a source checkout)."""
    return resources.files("interactcs_gym.fds").joinpath("data", name)


def read_data(source: str | Path | None, default_name: str) -> tuple[Any, str]:
    """Parse a JSON or YAML file: ``source`` if given, else the packaged ``default_name``.

    Returns ``(data, label)`` where ``label`` names the file in error messages.
    """
    if source is None:
        ref, label = data_path(default_name), default_name
    else:
        ref, label = Path(source), str(source)
    try:
        text = ref.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataFileError(f"{label}: cannot read the file ({exc})") from exc
    try:
        if label.endswith((".yaml", ".yml")):
            return yaml.safe_load(text), label
        return json.loads(text), label
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DataFileError(f"{label}: not valid {'YAML' if label.endswith('l') else 'JSON'}: {exc}") from exc


def validate_records(records: Any, model: type[M], label: str, key: str) -> list[M]:
    """Validate a list of records against ``model``; errors name file, record index/``key``, field."""
    if not isinstance(records, list):
        raise DataFileError(f"{label}: expected a list of records, got {type(records).__name__}")
    out: list[M] = []
    for i, record in enumerate(records):
        try:
            out.append(model.model_validate(record))
        except ValidationError as exc:
            ident = record.get(key) if isinstance(record, dict) else None
            where = f"record {i}" + (f" ({key} {ident!r})" if ident is not None else "")
            raise DataFileError(f"{label}: {where}: {format_validation_error(exc)}") from exc
    seen: set[str] = set()
    for i, item in enumerate(out):
        ident = getattr(item, key)
        if ident in seen:
            raise DataFileError(f"{label}: record {i}: duplicate {key} {ident!r}")
        seen.add(ident)
    return out


def format_validation_error(exc: ValidationError) -> str:
    """One line per pydantic error: ``field 'a.b.0': message (got value)``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(record)"
        got = err.get("input")
        shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
        if len(shown) > 60:
            shown = shown[:57] + "..."
        parts.append(f"field {loc!r}: {err['msg']} (got {shown})")
    return "; ".join(parts)
