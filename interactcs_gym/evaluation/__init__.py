"""Evaluation harness (SPEC section 6): run an agent on an env id over N users x S seeds, record
every episode in a resumable JSONL results file, report the paper's metrics as Markdown and plots.

* :func:`evaluate` (``runner``): the loop; ``python -m interactcs_gym.evaluate`` is its CLI.
* :mod:`~interactcs_gym.evaluation.metrics`: metric families (FDS Table 1, generic) and the
  mean ± std over seeds aggregation; :func:`register_metric_family` to add one.
* :mod:`~interactcs_gym.evaluation.store`: the results file (append, fsync, lock, repair).
* :mod:`~interactcs_gym.evaluation.report` / :mod:`~interactcs_gym.evaluation.plots`: Markdown
  tables and the Pareto plot.
"""

from interactcs_gym.evaluation.metrics import (FDS_METRICS, GENERIC_METRICS, Metric, MetricFamily,
                                               mean_std_over_seeds, register_metric_family)
from interactcs_gym.evaluation.runner import (EvalConfig, EvaluationError, EvaluationResult,
                                              episode_seeds, evaluate, run_episode)

__all__ = ["evaluate", "run_episode", "episode_seeds", "EvalConfig", "EvaluationError",
           "EvaluationResult", "Metric", "MetricFamily", "FDS_METRICS", "GENERIC_METRICS",
           "mean_std_over_seeds", "register_metric_family"]
