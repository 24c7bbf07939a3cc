"""Benchmark (b): CMPO trainer step time / TRL GRPOTrainer step time, same model, batch and token
budget, single-turn prompts (target <= 1.1).

Both trainers generate with transformers on the same model, G completions for each of
``prompts_per_step`` prompts, ``max_new_tokens`` tokens at most, one optimiser step per training
step on the whole batch (one forward/backward of all completions), β = 0, one PPO epoch, and the
same reward on the completion text. The CMPO side runs against a one-turn Gymnasium env registered
here; TRL's side is ``GRPOTrainer`` on the same prompts as a conversational dataset. A step's time
covers generation, scoring and the update (CMPO: ``perf/step_s``; TRL: on_step_begin -> on_step_end).

    python benchmarks/trainer_vs_grpo.py --out benchmarks/results/trainer_vs_grpo.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym

ENV_ID = "BenchSingleTurn-v0"
PROMPTS = [f"Tell the customer about order number {i} and what happened to it." for i in range(256)]


def reward_of(text: str) -> float:
    """The same reward on both sides: the share of vowels in the completion."""
    return sum(c in "aeiou" for c in text) / max(len(text), 1)


class SingleTurnEnv(gym.Env):
    """One user prompt, one agent turn, reward = :func:`reward_of` (no cost)."""

    def __init__(self):
        self.observation_space = gym.spaces.Text(max_length=500, charset=string.printable)
        self.action_space = gym.spaces.Text(max_length=100_000, charset=string.printable)
        self.prompt = ""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.prompt = PROMPTS[int(self.np_random.integers(len(PROMPTS)))]
        return self.prompt, {"messages": [{"role": "user", "content": self.prompt}], "cost": 0.0}

    def step(self, action):
        messages = [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": action},
                    {"role": "user", "content": "ok"}]
        return "ok", reward_of(action), True, False, {"messages": messages, "cost": 0.0}


def run_cmpo(model_dir: str, out: str, args) -> list[float]:
    from accelerate.state import AcceleratorState

    from cmpo.config import CMPOConfig
    from cmpo.trainer import CMPOTrainer

    AcceleratorState._reset_state(reset_partial_state=True)
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=SingleTurnEnv, disable_env_checker=True)
    cfg = CMPOConfig(output_dir=out, model_name_or_path=model_dir, env_id=ENV_ID, estimator="grpo",
                     cost_controller="none", group_size=args.group_size,
                     groups_per_step=args.prompts_per_step, micro_batch_size=args.prompts_per_step * args.group_size,
                     max_new_tokens=args.max_new_tokens, max_steps=args.steps, learning_rate=1e-5,
                     lr_scheduler_type="constant", warmup_ratio=0.0, epsilon_low=0.2, epsilon_high=0.28,
                     save_steps=0, report_to=["none"], plot=False, disable_tqdm=True, log_dialogues=0,
                     bf16=False)
    trainer = CMPOTrainer(cfg)
    trainer.save = lambda: None  # time steps, not checkpoint writes (TRL's side saves nothing)
    trainer.finish = lambda: None
    records = trainer.train()
    return [r["perf/step_s"] for r in records]


def run_grpo(model_dir: str, out: str, args) -> list[float]:
    from accelerate.state import AcceleratorState
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    AcceleratorState._reset_state(reset_partial_state=True)
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    def reward(completions, **kwargs):
        return [reward_of(c[0]["content"]) for c in completions]

    batch = args.prompts_per_step * args.group_size
    config = GRPOConfig(output_dir=out, per_device_train_batch_size=batch, num_generations=args.group_size,
                        gradient_accumulation_steps=1, steps_per_generation=1, max_completion_length=args.max_new_tokens,
                        max_steps=args.steps, learning_rate=1e-5, lr_scheduler_type="constant", beta=0.0,
                        epsilon=0.2, epsilon_high=0.28, loss_type="dapo", temperature=1.0, top_k=0, top_p=1.0,
                        num_iterations=1, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                        logging_steps=1, disable_tqdm=True, seed=0)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS])
    trainer = GRPOTrainer(model=model_dir, reward_funcs=reward, args=config, train_dataset=dataset,
                          callbacks=[StepTimer()])
    trainer.train()
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 256], help="tiny-model widths to time")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompts_per_step", type=int, default=4)
    parser.add_argument("--group_size", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6, help="steps per run; the first 2 are warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    parser.add_argument("--out", default="benchmarks/results/trainer_vs_grpo.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cmpo.tiny_model import build_tiny_model

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in args.hidden:
            model_dir = str(build_tiny_model(Path(tmp) / f"model-{hidden}", hidden=hidden, layers=args.layers,
                                             heads=4, kv_heads=2))
            ratios, cmpo_med, trl_med = [], [], []
            for r in range(args.repeats):  # interleaved, so both see the same load on a shared CPU
                ours = statistics.median(run_cmpo(model_dir, f"{tmp}/cmpo-{hidden}-{r}", args)[2:])
                theirs = statistics.median(run_grpo(model_dir, f"{tmp}/trl-{hidden}-{r}", args)[2:])
                cmpo_med.append(ours)
                trl_med.append(theirs)
                ratios.append(ours / theirs)
                print(f"hidden={hidden} repeat={r}: cmpo {ours:.3f} s/step, trl {theirs:.3f} s/step, "
                      f"ratio {ours / theirs:.3f}", flush=True)
            results.append({"hidden": hidden, "layers": args.layers, "cmpo_step_s": statistics.median(cmpo_med),
                            "trl_grpo_step_s": statistics.median(trl_med), "ratio": statistics.median(ratios),
                            "ratios": ratios})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    for row in results:
        print(f"hidden {row['hidden']}: CMPO {row['cmpo_step_s']:.3f} s/step, TRL GRPO "
              f"{row['trl_grpo_step_s']:.3f} s/step, ratio {row['ratio']:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
