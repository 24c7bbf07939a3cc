"""Per-step metrics of a CMPO run: rollout summaries, the JSONL log and the training plot.

Metric names are grouped CleanRL-style:

* ``rollout/``: ``outcome`` (mean R_i), ``process_reward`` (mean p_{i,t}), ``satisfaction``
  (mean final ``info["satisfaction"]``, FDS), ``session_cost`` (J_C = mean C_i), ``cost_rate``
  (fraction of sessions with C_i > 0: FDS's V-Rate), ``finished_rate`` (FDS's FR), ``turns``,
  ``generated_tokens``, ``truncated_rate``;
* ``cost/``: ``lambda`` (λ_k used in this step's advantages), ``limit`` (d);
* ``loss/``: ``loss``, ``policy_loss``, ``kl_ref`` (k3 to the reference, when β > 0), ``approx_kl``
  (to the rollout policy), ``clip_fraction``, ``entropy``, ``mean_ratio``, ``grad_norm``; with the
  ``ppo`` estimator also ``value_loss``, ``value_clip_fraction`` and ``rollout/value_mean``,
  ``rollout/return_mean``, ``rollout/advantage_mean`` (before whitening) and
  ``rollout/explained_variance`` (1 − Var(R − V)/Var(R) over the agent tokens, :mod:`cmpo.ppo`);
* ``perf/``: ``step_s``, ``rollout_s``, ``env_s``, ``update_s``, ``tokens_per_s`` (generated
  tokens per second of rollout), ``env_fraction``; ``train/lr``.

The JSONL file (``metrics.jsonl``) has one object per logged step; on resume, lines after the
checkpoint's step are dropped so that the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from cmpo.rollout import Episode


def _mean(values: Iterable[float]) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def summarize(ep: Episode) -> dict[str, Any]:
    """What the logs need from an episode (small, no tokens: gathered across processes)."""
    info = ep.final_info
    return {"outcome": ep.outcome, "session_cost": ep.session_cost,
            "process_rewards": [p for p in ep.process_rewards if p is not None],
            "satisfaction": info.get("satisfaction") if isinstance(info.get("satisfaction"), (int, float)) else None,
            "finished_ok": bool(info["finished_ok"]) if "finished_ok" in info else None,
            "turns": ep.num_turns, "generated_tokens": ep.num_generated_tokens,
            "truncated": ep.truncated}


def rollout_metrics(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """``rollout/*`` means over episode summaries (NaN for a quantity no episode reports)."""
    return {
        "rollout/outcome": _mean(s["outcome"] for s in summaries),
        "rollout/process_reward": _mean(p for s in summaries for p in s["process_rewards"]),
        "rollout/satisfaction": _mean(s["satisfaction"] for s in summaries if s["satisfaction"] is not None),
        "rollout/session_cost": _mean(s["session_cost"] for s in summaries),
        "rollout/cost_rate": _mean(s["session_cost"] > 0 for s in summaries),
        "rollout/finished_rate": _mean(s["finished_ok"] for s in summaries if s["finished_ok"] is not None),
        "rollout/turns": _mean(s["turns"] for s in summaries),
        "rollout/generated_tokens": float(sum(s["generated_tokens"] for s in summaries)),
        "rollout/truncated_rate": _mean(s["truncated"] for s in summaries),
    }


class JsonlLog:
    """Append-only JSONL metrics file (one object per step, NaN written as null)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Keep only the records of steps <= ``step`` (used when resuming from that step)."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(clean, sort_keys=True) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip()]


def plot_training(records: list[dict[str, Any]], out_png: str | Path) -> Path:
    """Plot λ, the mean session cost (with the limit d) and satisfaction vs step into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]

    def series(key: str) -> list[float]:
        return [float("nan") if r.get(key) is None else float(r[key]) for r in records]

    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    axes[0].plot(steps, series("cost/lambda"), color="tab:red")
    axes[0].set_ylabel("λ")
    axes[1].plot(steps, series("rollout/session_cost"), label="mean session cost J_C")
    axes[1].plot(steps, series("cost/limit"), "--", color="gray", label="limit d")
    axes[1].set_ylabel("cost")
    axes[1].legend(loc="best")
    sat = series("rollout/satisfaction")
    if all(math.isnan(v) for v in sat):  # envs without a satisfaction score: plot the outcome
        axes[2].plot(steps, series("rollout/outcome"), color="tab:green")
        axes[2].set_ylabel("outcome R")
    else:
        axes[2].plot(steps, sat, color="tab:green")
        axes[2].set_ylabel("satisfaction")
    axes[2].set_xlabel("training step")
    fig.suptitle("CMPO training")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
