"""Evaluation harness (SPEC section 6): run an agent on an env id over N users x S seeds, record
every episode in a resumable JSONL results file, report the paper's metrics as Markdown and plots.

* :func:`evaluate` (``runner``): the loop; ``python -m interactcs_gym.evaluate`` is its CLI.
* :func:`play_episode` (``episode``): one agent in one env, the one episode loop of the project
  (evaluation, SFT demonstrations, benchmarks and the tiny model's openings use it).
* :mod:`~interactcs_gym.evaluation.metrics`: which metric family an env gets (the env declares it;
  the families live with their domain, the classes and the mean ± std over seeds in
  :mod:`interactcs_gym.core.metrics`); :func:`register_metric_family` to add one by name.
* :mod:`~interactcs_gym.evaluation.store`: the results file (append, fsync, lock, repair).
* :mod:`~interactcs_gym.evaluation.report` / :mod:`~interactcs_gym.evaluation.plots`: Markdown
  tables and the Pareto plot.
"""

from interactcs_gym.core.metrics import GENERIC_METRICS, Metric, MetricFamily, mean_std_over_seeds
from interactcs_gym.evaluation.episode import play_episode
from interactcs_gym.evaluation.metrics import register_metric_family, resolve_family
from interactcs_gym.evaluation.runner import (EvalConfig, EvaluationError, EvaluationResult,
                                              episode_seeds, evaluate, run_episode)

__all__ = ["evaluate", "play_episode", "run_episode", "episode_seeds", "EvalConfig", "EvaluationError",
           "EvaluationResult", "Metric", "MetricFamily", "GENERIC_METRICS", "mean_std_over_seeds",
           "register_metric_family", "resolve_family"]
