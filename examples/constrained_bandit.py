"""Constrained bandit: why CMPO controls its cost multiplier with a PID (Stooke et al. 2020).

A one-turn "service decision" bandit with a budget: each batch the policy answers 256 complaints
by choosing one of three actions (Bernoulli satisfaction reward, Bernoulli voucher cost):

    action            P(satisfied)   P(voucher issued)
    apologise             0.25             0.0
    small voucher         0.60             0.5
    full refund           0.90             1.0

Constraint: voucher rate E[c] <= d = 0.30. The best constrained policy mixes "apologise" (40 %) and
"small voucher" (60 %): cost 0.30, reward 0.46. Without a cost term the policy learns "full
refund" (cost 1.0, reward 0.90).

The policy is a softmax over the three actions, trained by policy gradient with CMPO's advantage
(``cmpo.advantage.hybrid_advantages``, each batch is one group of one-turn rollouts; no process
reward): A = normalised reward − λ·cost; θ ← θ + lr·mean(A·∇log π). λ comes from each variant's
cost controller (``cmpo.lagrangian.make_cost_controller``), updated every iteration with the
batch's mean cost. Everything else (seed, policy learning rate, batch) is the same for all variants.
The policy starts cheap (cost 0.16 < d), so the cost rises through d while learning, as the
voucher rate does in the paper's training runs.

Run (a few seconds on a CPU)::

    python examples/constrained_bandit.py --out runs/constrained-bandit

writes ``cost.png`` (expected cost, λ and reward per iteration) and ``table.md`` (mean over seeds
of: final cost, overshoot above d, oscillation amplitude over the last half, final reward).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from cmpo.advantage import hybrid_advantages  # noqa: E402
from cmpo.lagrangian import CostController, make_cost_controller  # noqa: E402

ACTIONS = ("apologise", "small voucher", "full refund")
P_SATISFIED = np.array([0.25, 0.60, 0.90])
P_VOUCHER = np.array([0.0, 0.5, 1.0])
COST_LIMIT = 0.30
INITIAL_LOGITS = np.array([2.0, 0.0, 0.0])
POLICY_LR = 0.2
BATCH_SIZE = 256

# Controller settings. "lagrangian" uses the PID's integral gain as its learning rate, so the two
# differ only by the P and D terms (Stooke et al.'s comparison). The fixed values straddle the
# multiplier the constraint needs (about 1.3-1.4 here, in units of the normalised reward).
VARIANTS: dict[str, dict] = {
    "none": {"name": "none"},
    "fixed-low": {"name": "fixed", "lam": 1.0},
    "fixed-high": {"name": "fixed", "lam": 1.6},
    "lagrangian": {"name": "lagrangian", "lr": 0.2},
    "pid": {"name": "pid", "kp": 4.0, "ki": 0.2, "kd": 10.0, "d_delay": 5, "ema_alpha_d": 0.9},
}


def make_controller(variant: str, cost_limit: float = COST_LIMIT) -> CostController:
    """The cost controller of ``variant`` (a key of ``VARIANTS``)."""
    settings = dict(VARIANTS[variant])
    return make_cost_controller(settings.pop("name"), cost_limit=cost_limit, **settings)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


def train(controller: CostController, np_random: np.random.Generator, iterations: int = 600,
          batch_size: int = BATCH_SIZE, policy_lr: float = POLICY_LR) -> dict[str, np.ndarray]:
    """Policy-gradient training under ``controller``; returns per-iteration histories.

    ``cost`` and ``reward`` are the policy's exact expected cost and reward (Σ_a π(a)·c_a) before
    each update; ``batch_cost`` is what the controller saw (the sampled batch mean); ``lam`` is the
    λ used in that iteration's advantage.
    """
    logits = INITIAL_LOGITS.copy()
    history = {key: np.zeros(iterations) for key in ("cost", "reward", "lam", "batch_cost")}
    no_process = [[0.0]] * batch_size
    for k in range(iterations):
        pi = softmax(logits)
        actions = np_random.choice(len(ACTIONS), size=batch_size, p=pi)
        rewards = (np_random.random(batch_size) < P_SATISFIED[actions]).astype(float)
        costs = (np_random.random(batch_size) < P_VOUCHER[actions]).astype(float)
        lam = controller.lam
        adv = np.concatenate(hybrid_advantages(rewards, no_process, costs[:, None], lam, w_p=0.0))
        grad_log_pi = np.eye(len(ACTIONS))[actions] - pi        # ∇_θ log softmax(θ)[a]
        logits += policy_lr * (adv[:, None] * grad_log_pi).mean(axis=0)
        history["cost"][k], history["reward"][k] = pi @ P_VOUCHER, pi @ P_SATISFIED
        history["lam"][k], history["batch_cost"][k] = lam, costs.mean()
        controller.update(costs.mean())
    return history


def summarise(history: dict[str, np.ndarray], cost_limit: float = COST_LIMIT) -> dict[str, float]:
    """Final cost and reward (mean over the last 10 % of iterations), overshoot = max(0, max cost
    − d), oscillation = half the peak-to-peak range of the cost over the last half."""
    cost, n = history["cost"], len(history["cost"])
    tail, last_half = slice(n - max(n // 10, 1), n), cost[n // 2:]
    return {
        "final_cost": float(cost[tail].mean()),
        "overshoot": float(max(0.0, cost.max() - cost_limit)),
        "oscillation": float((last_half.max() - last_half.min()) / 2),
        "final_reward": float(history["reward"][tail].mean()),
    }


def run_all(seeds: int = 3, iterations: int = 600,
            variants: list[str] | None = None) -> tuple[dict, dict]:
    """Train every variant on seeds 0..seeds-1; returns (histories of seed 0, metrics per seed)."""
    histories, metrics = {}, {}
    for variant in variants or list(VARIANTS):
        metrics[variant] = []
        for seed in range(seeds):
            history = train(make_controller(variant), np.random.default_rng(seed), iterations)
            metrics[variant].append(summarise(history))
            if seed == 0:
                histories[variant] = history
    return histories, metrics


def markdown_table(metrics: dict[str, list[dict[str, float]]],
                   cost_limit: float = COST_LIMIT) -> str:
    """Mean ± std over seeds of each metric, one row per variant, with the controller settings."""
    head = (f"| variant | controller | final cost (d = {cost_limit:.2f}) | overshoot above d | "
            "oscillation (last half) | final reward |\n|---|---|---|---|---|---|\n")
    rows = []
    for variant, runs in metrics.items():
        cells = []
        for key in ("final_cost", "overshoot", "oscillation", "final_reward"):
            values = np.array([run[key] for run in runs])
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
        settings = ", ".join(f"{k}={v}" for k, v in VARIANTS[variant].items() if k != "name")
        rows.append(f"| {variant} | {VARIANTS[variant]['name']}"
                    f"{' (' + settings + ')' if settings else ''} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def plot(histories: dict[str, dict[str, np.ndarray]], path: Path,
         cost_limit: float = COST_LIMIT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_cost, ax_lam, ax_reward) = plt.subplots(3, 1, figsize=(9.5, 9), sharex=True)
    for variant, history in histories.items():
        ax_cost.plot(history["cost"], label=variant, lw=1.4)
        ax_lam.plot(history["lam"], label=variant, lw=1.2)
        ax_reward.plot(history["reward"], label=variant, lw=1.4)
    ax_cost.axhline(cost_limit, color="k", ls="--", lw=1, label=f"d = {cost_limit}")
    ax_cost.axhspan(cost_limit - 0.03, cost_limit + 0.03, color="k", alpha=0.08, label="d ± 0.03")
    ax_cost.set_ylabel("expected cost E[c]")
    ax_cost.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax_lam.set_ylabel("multiplier λ")
    ax_reward.set_ylabel("expected reward")
    ax_reward.set_xlabel("policy-gradient iteration")
    ax_cost.set_title("Constrained bandit (seed 0): cost control by each variant")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/constrained-bandit", help="output folder")
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds per variant (the table shows mean ± std)")
    parser.add_argument("--iterations", type=int, default=600, help="policy-gradient iterations")
    return parser


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    args = make_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    histories, metrics = run_all(args.seeds, args.iterations)
    table = markdown_table(metrics)
    (out / "table.md").write_text(table)
    plot(histories, out / "cost.png")
    log(table)
    log(f"wrote {out / 'table.md'} and {out / 'cost.png'}")
    return metrics


if __name__ == "__main__":
    main()
