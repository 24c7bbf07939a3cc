"""A competent cold-start policy on a CPU: a small local model taught the plain SOP scripts.

The cold start of ``cmpo.reproduce`` (the paper's SFT baseline, at CPU scale):

1. **Model**: :func:`cmpo.tiny_model.build_tiny_model` (Qwen2 config, 128 wide, 2 layers,
   head_dim 32; tokenizer trained on the suite's data files and the demonstrations, so it changes
   with them and not with the code) with :data:`DIALOGUE_TEMPLATE`: ChatML that renders the system
   message empty. The demonstrations never use the system prompt (their text copies no order
   fact), and without its ~930 tokens a dialogue is ~350 tokens, so SFT and every RL step cost a
   quarter of the compute.
2. **Demonstrations** (:func:`demonstration_mix`): ``sop-generous`` and ``sop-frugal``
   (:mod:`interactcs_gym.fds.demo_agents`) on the train split, ``generous_share`` (0.55) of the
   dialogues from the generous one. Both scripts first write down the demand they read in the
   user's words ("Wants money back."), then decide; the decision is a coin the model learns to flip
   with probability ~``generous_share`` whatever it read. Sampled at temperature 0.5 it issues the
   voucher in ~70 % of sessions: it over-spends the budget (the paper's SFT baseline: V-Rate 45 %
   against 30 %) and leaves RL to learn *whom* a voucher pays off for.
3. **SFT** with ``cmpo.sft`` (TRL's ``SFTTrainer``, loss on the agent's tokens only), 10 epochs at
   6e-3 (cosine): fewer epochs or a lower rate leave the model unable to read the demand (its
   reading was right for 22 of 80 test users after 6 epochs at 6e-3, for 71 of 80 after 10) and
   its ``<action>`` tag loosely tied to its words.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

#: ChatML (as :data:`cmpo.tiny_model.CHAT_TEMPLATE`) with the system message's content left out.
DIALOGUE_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{- '\\n' }}"
    "{%- elif message['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_base_model(out_dir: str | Path, *, hidden: int = 128, layers: int = 2, seed: int = 0,
                     rows: list[dict[str, Any]] = ()) -> Path:
    """The untrained cold-start model: :func:`~cmpo.tiny_model.build_tiny_model` with
    :data:`DIALOGUE_TEMPLATE` (head_dim = hidden / 4 heads, 2 key-value heads), its tokenizer
    trained on the data files and the messages of the demonstration ``rows``."""
    from transformers import AutoTokenizer

    from cmpo.tiny_model import build_tiny_model

    texts = [m["content"] for row in rows for m in row["messages"] if m["role"] != "system"]
    out = build_tiny_model(out_dir, hidden=hidden, layers=layers, heads=4, kv_heads=2, seed=seed,
                           extra_texts=texts)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = DIALOGUE_TEMPLATE
    tokenizer.save_pretrained(out)
    return out


def demonstration_mix(episodes: int, *, generous_share: float = 0.55, env_id: str = "FDS-Hard-v0",
                      seed: int = 0) -> list[dict[str, Any]]:
    """``episodes`` train-split dialogues, ``round(generous_share * episodes)`` of them from
    ``sop-generous`` and the rest from ``sop-frugal``, on distinct reset seeds, shuffled."""
    from cmpo.sft import demonstrations

    if not 0 <= generous_share <= 1:
        raise ValueError(f"generous_share must be in [0, 1], got {generous_share}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    n_generous = round(generous_share * episodes)
    kwargs = {"split": "train"}
    rows = list(demonstrations(env_id, "sop-generous", n_generous, seed=seed, env_kwargs=kwargs))
    rows += list(demonstrations(env_id, "sop-frugal", episodes - n_generous, seed=seed + n_generous,
                                env_kwargs=kwargs))
    random.Random(seed).shuffle(rows)
    return rows


def train_cold_start(run_dir: str | Path, *, episodes: int = 240, epochs: float = 10.0,
                     learning_rate: float = 6e-3, generous_share: float = 0.55, hidden: int = 128,
                     layers: int = 2, seed: int = 0) -> Path:
    """Build the base model (``run_dir/base-model``), write the demonstrations
    (``run_dir/demonstrations.jsonl``) and fine-tune with ``cmpo.sft``; returns the model folder
    ``run_dir/final``, which appears only once complete (an existing one is returned as is)."""
    from trl import SFTConfig

    from cmpo.sft import SFTScriptArguments, train, write_dataset

    run = Path(run_dir)
    final = run / "final"
    if (final / "config.json").is_file():
        return final
    rows = demonstration_mix(episodes, generous_share=generous_share, seed=seed)
    base = build_base_model(run / "base-model", hidden=hidden, layers=layers, seed=seed, rows=rows)
    data = run / "demonstrations.jsonl"
    write_dataset(rows, data)
    partial = run / "final.partial"
    args = SFTConfig(output_dir=str(partial), num_train_epochs=epochs, per_device_train_batch_size=8,
                     learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05,
                     max_length=2048, logging_steps=10, save_strategy="no", report_to="none",
                     assistant_only_loss=True, use_cpu=True, bf16=False, seed=seed,
                     gradient_checkpointing=False)
    train(SFTScriptArguments(dataset=str(data), model_name_or_path=str(base)), args)
    partial.replace(final)
    return final


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cmpo.cold_start", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="folder of the cold start; the model is written to RUN_DIR/final")
    parser.add_argument("--episodes", type=int, default=240, help="demonstration dialogues (default 240)")
    parser.add_argument("--epochs", type=float, default=10.0, help="SFT epochs (default 10)")
    parser.add_argument("--generous-share", type=float, default=0.55,
                        help="share of sop-generous dialogues (default 0.55; the rest sop-frugal)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.epochs <= 0:
        parser.error("--episodes must be >= 1 and --epochs > 0")
    import torch

    torch.set_num_threads(args.threads)
    out = train_cold_start(args.run_dir, episodes=args.episodes, epochs=args.epochs,
                           generous_share=args.generous_share, seed=args.seed)
    print(f"cold-start model written to {out}")


if __name__ == "__main__":
    main()
