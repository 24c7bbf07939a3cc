"""Reproduce the paper's cost-control result at CPU scale, from one command.

    python -m cmpo.reproduce --out runs/reproduce            # every variant (see benchmarks/README.md)
    python -m cmpo.reproduce --out runs/reproduce-quick --quick

1. **Cold start** (:mod:`cmpo.cold_start`): a small local model fine-tuned with ``cmpo.sft`` on a
   55 : 45 mix of the ``sop-generous`` and ``sop-frugal`` scripts (train split); it keeps the
   protocol and over-spends the voucher budget, like the paper's SFT baseline.
2. **Every variant** from that cold start, same step budget, seeds and batch (:data:`VARIANTS`): the
   RL baselines (GRPO, CAPO, PPO when the trainer has it) and CMPO with the cost controllers of the
   paper's Figure 2 (PID, plain Lagrangian, fixed λ, none) and without the process reward.
3. **Evaluation** of the cold start and every variant on the 80 test users x ``seeds``
   (:mod:`cmpo.evaluate_policy`), sampled at the training temperature.
4. **Report**: ``report.md`` (Table-1 columns, V-Rate and Sat per demand type, the checks of the
   expected result), ``results.json``, ``cost_control.png`` (V-Rate, λ and Sat vs step per
   variant), ``pareto.png`` (test Sat vs V-Rate) and ``<variant>/final``.

Each stage is skipped when its output exists: a killed run continues where it stopped (a variant
resumes from its newest checkpoint) and a finished variant is not retrained.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The voucher budget d of the paper.
BUDGET = 0.30

#: Variant -> CMPOConfig overrides of :data:`BASE_CONFIG` (paper Table 1 and Figure 2).
VARIANTS: dict[str, dict[str, Any]] = {
    "cmpo-pid": {},
    "cmpo-lagrangian": {"cost_controller": "lagrangian"},
    "cmpo-fixed": {"cost_controller": "fixed"},
    "cmpo-no-cost": {"cost_controller": "none", "use_cost": False},
    "cmpo-no-process": {"w_p": 0.0},
    "grpo": {"estimator": "grpo"},
    "capo": {"estimator": "capo"},
    "ppo": {"estimator": "ppo"},
}
QUICK_VARIANTS = ("cmpo-pid", "cmpo-no-cost")


@dataclass
class Settings:
    """What differs between the full reproduction and ``--quick``."""

    demos: int = 240            # cold-start demonstrations
    sft_epochs: float = 10.0
    steps: int = 40             # RL steps per variant
    seeds: int = 3              # test seeds (x 80 users)
    users: int = 80


FULL = Settings()
QUICK = Settings(demos=160, sft_epochs=10.0, steps=24, seeds=1)

#: The RL run every variant shares (temperature: the sampling temperature of training and test).
BASE_CONFIG: dict[str, Any] = {
    "env_id": "FDS-Hard-v0", "env_kwargs": {"split": "train", "process_judge": "rule"}, "max_seq_len": 2048,
    "group_size": 4, "groups_per_step": 8, "max_new_tokens": 80, "temperature": 0.5,
    "learning_rate": 1e-4, "lr_scheduler_type": "constant_with_warmup", "warmup_ratio": 0.15, "beta": 0.1,
    "num_epochs": 2, "num_mini_batches": 2, "micro_batch_size": 8, "unfinished_outcome": 0.0,
    "cost_limit": BUDGET, "pid_kp": 1.0, "pid_ki": 0.3, "pid_kd": 0.0, "lagrangian_lr": 0.3, "fixed_lambda": 1.0,
    "save_steps": 4, "save_total_limit": 1, "report_to": ["none"], "plot": False, "log_dialogues": 1, "bf16": False,
}


def available_variants() -> list[str]:
    """The variants :func:`main` can run, in report order."""
    return list(VARIANTS)


# -- stages -------------------------------------------------------------------------------------
def cold_start(out: Path, s: Settings, seed: int) -> Path:
    from cmpo.cold_start import train_cold_start

    return train_cold_start(out / "cold-start", episodes=s.demos, epochs=s.sft_epochs, seed=seed)


def train_variant(out: Path, name: str, start: Path, s: Settings, seed: int, disable_tqdm: bool) -> Path:
    from accelerate.state import AcceleratorState

    from cmpo.checkpoint import latest_checkpoint
    from cmpo.config import CMPOConfig
    from cmpo.trainer import CMPOTrainer

    run = out / name
    if (run / "final" / "config.json").is_file():
        return run / "final"
    config = CMPOConfig(**{**BASE_CONFIG, **VARIANTS[name], "output_dir": str(run),
                           "model_name_or_path": str(start), "max_steps": s.steps, "seed": seed,
                           "run_name": name, "disable_tqdm": disable_tqdm,
                           "resume": latest_checkpoint(run) is not None})
    AcceleratorState._reset_state(reset_partial_state=True)  # one process runs many trainers
    CMPOTrainer(config).train()
    return run / "final"


def evaluate(model_dir: Path, out_json: Path, s: Settings, temperature: float) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cmpo.evaluate_policy import play_test_split, summarize

    if out_json.is_file():
        return json.loads(out_json.read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    t0 = time.perf_counter()
    records = play_test_split(model, tokenizer, users=s.users, seeds=s.seeds, temperature=temperature,
                              max_new_tokens=BASE_CONFIG["max_new_tokens"], progress=True)
    result = {**summarize(records), "eval_s": time.perf_counter() - t0}
    out_json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def reference_agents(s: Settings) -> dict[str, dict[str, Any]]:
    """sop, never-voucher and always-voucher on the same episodes (scripted: seconds)."""
    import gymnasium as gym

    from cmpo.evaluate_policy import summarize
    from interactcs_gym.agents import load_agent
    from interactcs_gym.evaluation import play_episode

    env = gym.make("FDS-Hard-v0")
    out = {}
    for name in ("sop", "never-voucher", "always-voucher"):
        agent, records = load_agent(name), []
        for seed in range(s.seeds):
            for user in range(s.users):
                episode = play_episode(env, agent, seed=seed, options={"user_index": user},
                                       agent_seed=seed * 100_003 + user)
                info = episode["final_info"]
                records.append({"user": user, "seed": seed, "sat": info["satisfaction"],
                                "fr": info["finished_ok"], "voucher": info["voucher_issued"],
                                "demand": info["task"]["demand_type"], "turns": info["turn"]})
        out[name] = summarize(records)
    env.close()
    return out


# -- analysis -----------------------------------------------------------------------------------
def training_curves(run: Path) -> dict[str, list[float]]:
    """Per step: V-Rate (mean session cost), λ and Sat of the training rollouts."""
    path = run / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
    return {"step": [r["step"] for r in rows], "v_rate": [r["rollout/session_cost"] for r in rows],
            "lambda": [r["cost/lambda"] for r in rows], "sat": [r.get("rollout/satisfaction") for r in rows]}


def budget_tracking(v_rate: list[float], d: float = BUDGET) -> dict[str, float]:
    """Over the last half of training: mean |J − d| (how far the V-Rate sits from the budget),
    the overshoot max(J) − d and the oscillation (max(J) − min(J)) / 2."""
    half = v_rate[len(v_rate) // 2:] or v_rate
    if not half:
        return {"mean_abs_error": float("nan"), "overshoot": float("nan"), "oscillation": float("nan")}
    return {"mean_abs_error": sum(abs(x - d) for x in half) / len(half), "overshoot": max(half) - d,
            "oscillation": (max(half) - min(half)) / 2}


def whom_ratio(result: dict[str, Any]) -> float:
    """V-Rate on incentive-open + preference-learning users over that on feedback-oriented + rigid
    users (inf when the latter is 0 and the former is not)."""
    bd = result["by_demand"]
    if any(d not in bd for d in ("incentive_open", "preference_learning", "feedback_oriented", "rigid_pursuit")):
        return float("nan")  # too few test users to have every demand type
    pay = (bd["incentive_open"]["v_rate"] + bd["preference_learning"]["v_rate"]) / 2
    waste = (bd["feedback_oriented"]["v_rate"] + bd["rigid_pursuit"]["v_rate"]) / 2
    return float("inf") if waste == 0 and pay > 0 else (pay / waste if waste else float("nan"))


def checks(results: dict[str, dict[str, Any]], curves: dict[str, dict[str, list[float]]]) -> list[str]:
    """The expected result of the paper (issue 12, point 5), each line PASS or MISS with the numbers."""
    lines = []
    cold = results["cold-start"]

    def line(ok: bool, text: str) -> None:
        lines.append(f"- **{'PASS' if ok else 'MISS'}** {text}")

    if "cmpo-pid" in results:
        r = results["cmpo-pid"]
        v = r["v_rate"] / 100
        line(abs(v - BUDGET) <= 0.05, f"CMPO (PID) test V-Rate {v:.3f} within {BUDGET:.2f} ± 0.05")
        line(r["sat"] >= cold["sat"] - 0.05, f"CMPO (PID) Sat {r['sat']:.2f} >= cold start's {cold['sat']:.2f} − 0.05")
        line(r["fr"] >= 90, f"CMPO (PID) FR {r['fr']:.1f} % >= 90 %")
        ratio = whom_ratio(r)
        line(ratio >= 2, f"CMPO (PID) V-Rate on incentive-open/preference-learning users is {ratio:.2f}x "
                         "that on feedback-oriented/rigid users (>= 2x)")
        for base in ("grpo", "ppo"):
            if base in results:
                b = results[base]
                line(r["sat"] >= b["sat"], f"CMPO (PID) Sat {r['sat']:.2f} at V-Rate {r['v_rate']:.1f} % vs "
                                            f"{base.upper()} {b['sat']:.2f} at {b['v_rate']:.1f} % "
                                            f"(difference {r['sat'] - b['sat']:+.2f})")
    if "cmpo-no-cost" in results:
        v = results["cmpo-no-cost"]["v_rate"] / 100
        line(v > 0.5, f"without cost the test V-Rate stays above 0.5: {v:.3f}")
    if "cmpo-lagrangian" in curves and "cmpo-pid" in curves:
        lag, pid = budget_tracking(curves["cmpo-lagrangian"]["v_rate"]), budget_tracking(curves["cmpo-pid"]["v_rate"])
        line(lag["oscillation"] > pid["oscillation"] and lag["overshoot"] > pid["overshoot"],
             f"plain Lagrangian overshoots and oscillates more than PID over the last half of training "
             f"(overshoot {lag['overshoot']:+.3f} vs {pid['overshoot']:+.3f}, oscillation "
             f"{lag['oscillation']:.3f} vs {pid['oscillation']:.3f})")
    if "cmpo-fixed" in results:
        v = results["cmpo-fixed"]["v_rate"] / 100
        line(abs(v - BUDGET) > 0.05, f"fixed λ misses the budget on one side: test V-Rate {v:.3f} "
                                     f"({'above' if v > BUDGET else 'below'} {BUDGET:.2f})")
    return lines


# -- report -------------------------------------------------------------------------------------
def _row(name: str, r: dict[str, Any]) -> str:
    demand = " | ".join(f"{r['by_demand'][d]['v_rate']:.0f} / {r['by_demand'][d]['sat']:.2f}"
                        if d in r["by_demand"] else "–"
                        for d in ("incentive_open", "preference_learning", "feedback_oriented", "rigid_pursuit"))
    return f"| {name} | {r['sat']:.2f} ± {r['sat_std']:.2f} | {r['fr']:.1f} | {r['v_rate']:.1f} | {demand} |"


def write_report(out: Path, results: dict[str, dict[str, Any]], references: dict[str, dict[str, Any]],
                 curves: dict[str, dict[str, list[float]]], s: Settings, wall: dict[str, float]) -> None:
    lines = [
        "# CMPO reproduction at CPU scale", "",
        (f"FDS-Hard-v0 test split, {s.users} users x {s.seeds} seed(s), embedded persona simulator; "
         f"policies sampled at temperature {BASE_CONFIG['temperature']}. Every variant: {s.steps} steps "
         f"of {BASE_CONFIG['groups_per_step']} x {BASE_CONFIG['group_size']} train-split episodes from "
         f"the same cold start and seed. Budget d = {BUDGET:.2f}."), "",
        ("| policy | Sat | FR % | V-Rate % | V-Rate % / Sat: incentive-open | preference-learning | "
         "feedback-oriented | rigid |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(n, r) for n, r in references.items()]
    lines += [_row(n, r) for n, r in results.items()]
    lines += ["", "Training (last half): distance of the rollout V-Rate from d", "",
              "| variant | mean abs(J − d) | overshoot | oscillation | final λ | wall s |", "|---|---|---|---|---|---|"]
    for name, c in curves.items():
        t = budget_tracking(c["v_rate"])
        lam = c["lambda"][-1] if c["lambda"] else float("nan")
        lines.append(f"| {name} | {t['mean_abs_error']:.3f} | {t['overshoot']:+.3f} | {t['oscillation']:.3f} | "
                     f"{lam:.3f} | {wall.get(name, float('nan')):.0f} |")
    lines += ["", "## Expected result", ""] + checks(results, curves)
    lines += ["", "![cost control](cost_control.png)", "", "![pareto](pareto.png)", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(
        {"settings": vars(s), "base_config": BASE_CONFIG, "references": references, "policies": results,
         "curves": curves, "budget_tracking": {n: budget_tracking(c["v_rate"]) for n, c in curves.items()},
         "wall_s": wall, "checks": checks(results, curves)}, indent=1, default=str), encoding="utf-8")


def plot(out: Path, results: dict[str, dict[str, Any]], curves: dict[str, dict[str, list[float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, c in curves.items():
        for ax, key in zip(axes, ("v_rate", "lambda", "sat")):
            ax.plot(c["step"], c[key], label=name)
    axes[0].axhline(BUDGET, color="k", linestyle="--", label=f"budget d = {BUDGET}")
    for ax, title in zip(axes, ("V-Rate (training rollouts)", "λ", "Sat (training rollouts)")):
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "cost_control.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, r in results.items():
        ax.scatter(r["v_rate"] / 100, r["sat"])
        ax.annotate(name, (r["v_rate"] / 100, r["sat"]), fontsize=7)
    ax.axvline(BUDGET, color="k", linestyle="--")
    ax.set_xlabel("V-Rate (test)")
    ax.set_ylabel("Sat (test)")
    ax.set_title("Sat vs V-Rate")
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=110)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="run folder (a killed run continues where it stopped)")
    parser.add_argument("--quick", action="store_true", help=f"short version: {', '.join(QUICK_VARIANTS)}, "
                                                             f"{QUICK.steps} steps, {QUICK.seeds} test seed")
    parser.add_argument("--variants", default=None, help="comma-separated subset of the variants")
    parser.add_argument("--steps", type=int, default=None, help="RL steps per variant (override)")
    parser.add_argument("--demos", type=int, default=None, help="cold-start demonstrations (override)")
    parser.add_argument("--sft-epochs", type=float, default=None, help="cold-start SFT epochs (override)")
    parser.add_argument("--users", type=int, default=None, help="test users per seed (override, <= 80)")
    parser.add_argument("--seeds", type=int, default=None, help="test seeds (override)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a shared 2-core machine, see benchmarks/README.md)")
    args = parser.parse_args(argv)
    import torch

    import interactcs_gym  # noqa: F401

    torch.set_num_threads(args.threads)
    s = QUICK if args.quick else FULL
    overrides = {"steps": args.steps, "demos": args.demos, "sft_epochs": args.sft_epochs,
                 "users": args.users, "seeds": args.seeds}
    for key, value in overrides.items():
        if value is not None and value <= 0:
            parser.error(f"--{key.replace('_', '-')} must be > 0, got {value}")
    if args.users is not None and args.users > 80:
        parser.error("--users must be <= 80 (the test split's users)")
    s = Settings(**{**vars(s), **{k: v for k, v in overrides.items() if v is not None}})
    known = available_variants()
    names = list(QUICK_VARIANTS) if args.quick else known
    if args.variants:
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        bad = [v for v in names if v not in known]
        if bad:
            parser.error(f"unknown or unavailable variant(s) {bad}; choose from {known}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wall_path = out / "wall_s.json"
    wall = json.loads(wall_path.read_text()) if wall_path.is_file() else {}

    def timed(key: str, fn, *a):
        t0 = time.perf_counter()
        result = fn(*a)
        if key not in wall:
            wall[key] = time.perf_counter() - t0
            wall_path.write_text(json.dumps(wall, indent=1))
        return result

    temperature = BASE_CONFIG["temperature"]
    start = timed("cold-start", cold_start, out, s, args.seed)
    results = {"cold-start": timed("eval:cold-start", evaluate, start, out / "cold-start" / "eval.json", s, temperature)}
    curves = {}
    for name in names:
        print(f"== {name}")
        final = timed(name, train_variant, out, name, start, s, args.seed, False)
        results[name] = timed(f"eval:{name}", evaluate, final, out / name / "eval.json", s, temperature)
        curves[name] = training_curves(out / name)
    references = reference_agents(s)
    write_report(out, results, references, curves, s, wall)
    plot(out, results, curves)
    print((out / "report.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
