"""SFT cold start: demonstrations from a scripted agent, then TRL's ``SFTTrainer`` on agent tokens.

1. Write a demonstration dataset (JSONL, one dialogue per line in chat format: ``messages``, system
   prompt first, ending with the agent's last turn) by running an agent in an env::

       python -m cmpo.sft data --env FDS-Hard-v0 --env_kwargs '{"split": "train"}' --agent sop \\
           --episodes 400 --out runs/sft/sop-hard.jsonl

   ``--agent`` takes the short names of ``interactcs_gym.agents`` (sop, always-voucher, ...) or
   ``module:Class``; ``--min_reward`` / ``--max_cost`` keep only dialogues that did well enough.

2. Fine-tune on it, with the loss on the agent's tokens only (``assistant_only_loss``; TRL adds
   ``{% generation %}`` markers to known templates that lack them)::

       accelerate launch -m cmpo.sft train --config examples/sft_tiny_cpu.yaml
       python -m cmpo.sft train --dataset runs/sft/sop-hard.jsonl --model_name_or_path \\
           Qwen/Qwen2.5-7B-Instruct --output_dir runs/sft/qwen7b --num_train_epochs 2

   ``train`` takes every field of ``trl.SFTConfig`` plus :class:`SFTScriptArguments`; YAML sets
   defaults, flags override, unknown keys are errors. The result is an ordinary model folder that
   ``cmpo.train`` starts from (``model_name_or_path``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


# -- 1. demonstrations ------------------------------------------------------------------------------
def demonstrations(env_id: str, agent: str, episodes: int, *, seed: int = 0,
                   env_kwargs: dict[str, Any] | None = None, min_reward: float | None = None,
                   max_cost: float | None = None) -> Iterator[dict[str, Any]]:
    """Run ``agent`` for ``episodes`` episodes of ``env_id`` (reset seeds ``seed, seed+1, ...``) and
    yield each kept dialogue: ``messages`` (chat format, ending with the agent's last turn) and
    what the episode scored (``reward``, ``cost``, ``satisfaction``, ``termination_reason``)."""
    import gymnasium as gym

    import interactcs_gym  # noqa: F401  (registers the suite's env ids)
    from interactcs_gym.agents.registry import load_agent
    from interactcs_gym.evaluation.episode import play_episode

    env = gym.make(env_id, **(env_kwargs or {}))
    policy = load_agent(agent)
    try:
        for i in range(episodes):
            episode = play_episode(env, policy, seed=seed + i)
            if episode["status"] != "ok":
                error = episode["error"]
                raise RuntimeError(f"demonstration {i} of {agent!r} on {env_id}: {episode['status']} "
                                   f"in {error['phase']}: {error['type']}: {error['message']}")
            reward, cost = episode["return"], episode["cost_total"]
            if (min_reward is not None and reward < min_reward) or (max_cost is not None and cost > max_cost):
                continue
            messages = episode["messages"]
            while messages and messages[-1]["role"] != "assistant":  # end on the agent's turn
                messages = messages[:-1]
            yield {"messages": messages, "env_id": env_id, "seed": seed + i, "reward": reward,
                   "cost": cost, "satisfaction": episode["final_info"].get("satisfaction"),
                   "termination_reason": episode["termination_reason"]}
    finally:
        env.close()


def write_dataset(rows, out: str | Path) -> int:
    """Write rows as JSONL (atomically: a temp file renamed into place); returns how many."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(out)
    return n


def data_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m cmpo.sft data",
                                     description="Write demonstration dialogues of a scripted agent.")
    parser.add_argument("--env", default="FDS-Hard-v0", help="env id (default FDS-Hard-v0)")
    parser.add_argument("--env_kwargs", default="{}", help="JSON kwargs of gym.make, e.g. '{\"split\": \"train\"}'")
    parser.add_argument("--agent", default="sop", help="agent short name or module:Class (default sop)")
    parser.add_argument("--episodes", type=int, default=200, help="episodes to run")
    parser.add_argument("--seed", type=int, default=0, help="first reset seed")
    parser.add_argument("--min_reward", type=float, default=None, help="keep dialogues with return >= this")
    parser.add_argument("--max_cost", type=float, default=None, help="keep dialogues with cost <= this")
    parser.add_argument("--out", required=True, help="output JSONL path")
    args = parser.parse_args(argv)
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        parser.error(f"--env_kwargs must be a JSON object: {exc}")
    rows = demonstrations(args.env, args.agent, args.episodes, seed=args.seed, env_kwargs=env_kwargs,
                          min_reward=args.min_reward, max_cost=args.max_cost)
    n = write_dataset(rows, args.out)
    print(f"wrote {n} of {args.episodes} dialogues to {args.out}")


# -- 2. fine-tuning -----------------------------------------------------------------------------------
@dataclass
class SFTScriptArguments:
    """What ``cmpo.sft train`` adds to ``trl.SFTConfig``."""

    dataset: str = field(default="runs/sft/demos.jsonl", metadata={
        "help": "JSONL of dialogues (a 'messages' column) written by `python -m cmpo.sft data`."})
    model_name_or_path: str = field(default="runs/tiny-model", metadata={
        "help": "Model to fine-tune (hub id or local folder)."})
    build_tiny_model: bool = field(default=False, metadata={
        "help": "If model_name_or_path does not exist, build the tiny local chat model there first."})
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})


def train(script_args: SFTScriptArguments, training_args) -> Path:
    """Fine-tune with TRL's ``SFTTrainer``; returns the folder of the saved model."""
    from datasets import load_dataset
    from trl import SFTTrainer

    if script_args.build_tiny_model and not Path(script_args.model_name_or_path).exists():
        from cmpo.tiny_model import build_tiny_model

        build_tiny_model(script_args.model_name_or_path)
    if not Path(script_args.dataset).is_file():
        raise FileNotFoundError(f"no dataset at {script_args.dataset}; write one with "
                                "`python -m cmpo.sft data --out ...`")
    dataset = load_dataset("json", data_files=script_args.dataset, split="train").select_columns(["messages"])
    peft_config = None
    if script_args.use_peft:
        from peft import LoraConfig

        peft_config = LoraConfig(r=script_args.lora_r, lora_alpha=script_args.lora_alpha,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=script_args.model_name_or_path, args=training_args,
                         train_dataset=dataset, peft_config=peft_config)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    return Path(training_args.output_dir)


def make_train_parser():
    from trl import SFTConfig, TrlParser

    parser = TrlParser((SFTScriptArguments, SFTConfig), prog="python -m cmpo.sft train")
    # the cold start trains on the agent's tokens only, and is small: sensible defaults
    parser.set_defaults(assistant_only_loss=True, report_to="none", save_strategy="epoch")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("data", "train"):
        raise SystemExit("usage: python -m cmpo.sft {data,train} [options]  (see the module docstring)")
    if argv[0] == "data":
        data_main(argv[1:])
        return
    script_args, training_args = make_train_parser().parse_args_and_config(argv[1:])
    out = train(script_args, training_args)
    print(f"model written to {out}")


if __name__ == "__main__":
    main()
