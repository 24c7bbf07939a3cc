"""interactcs_gym: Gymnasium text-dialogue environments for customer-service agents, with cost.

``import interactcs_gym`` registers every id of ``envs_registry.yaml`` (FDS-Hard-v0, FDS-Easy-v0,
...); ``gym.make("interactcs_gym:FDS-Hard-v0")`` does the same without a prior import.

This package is light: it never imports torch. LLM back-ends need the ``llm`` extra.

Layout and import direction (``a <- b``: b may import a; nothing imports upward, no domain imports
another, no cycle; names loaded from ``"module:attr"`` strings count; ``tests/test_import_layers.py``
checks it)::

    core <- llm <- judges <- domains (fds, tau2) <- agents <- evaluation <- cmpo

* ``core``: the env contract (``DialogueEnv``, text spaces, info keys), the ``Agent`` interface,
  ``Metric``/``MetricFamily`` and the mean ± std aggregation, ``names.build`` (name -> class).
* ``llm``: chat back-ends. ``judges``: process reward and dialogue-quality judges; they import no
  domain: an env hands them what its rules decided (``TurnContext.sop``).
* a domain (``fds``, ``tau2``) is one folder: env, rules, data, user simulators, scripted agents,
  metric family (the env declares it as ``metric_family``). A new domain copies the shape of ``fds``.
* ``agents``: domain-free agents and the agent names; ``evaluation``: the episode loop
  (``play_episode``), the results store, reports; ``cmpo`` (separate package): the trainer.
"""

from interactcs_gym.core.env import INFO_KEYS, DialogueEnv, Opening, StepOutcome
from interactcs_gym.core.spaces import UnicodeText
from interactcs_gym.registry import register_all, registered_ids

__version__ = "0.1.0"
ENV_IDS = register_all()

__all__ = ["DialogueEnv", "Opening", "StepOutcome", "INFO_KEYS", "UnicodeText", "ENV_IDS", "registered_ids",
           "__version__"]
