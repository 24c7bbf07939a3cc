"""The CMPO trainer: multi-turn rollouts, hybrid advantages, PID-Lagrangian λ, clipped update.

A clean loop on ``accelerate`` (single CPU process up to multi-GPU with DeepSpeed ZeRO or FSDP),
reading top to bottom like CleanRL. One training step k:

1. **Rollouts.** ``groups_per_step`` reset seeds, G episodes each, all dialogues batched through
   the engine's ``run_dialogues`` (:mod:`cmpo.rollout`): token ids, sampling log-probs, agent-turn
   spans, per-turn costs and process rewards, outcomes.
2. **λ_k.** The cost controller (:mod:`cmpo.lagrangian`) is updated once with J_C, the mean
   session cost of the whole batch (all processes): λ_k = controller.update(J_C).
3. **Advantages.** For each group, the estimator (:mod:`cmpo.advantage`: cmpo, grpo or capo)
   turns outcomes, process rewards, costs and λ_k into per-turn advantages A_{i,t}; every sampled
   token of turn t gets A_{i,t}, every other token is masked out. The token-level ``ppo`` baseline
   (:mod:`cmpo.ppo`) instead puts each turn's reward − λ_k·cost on the turn's last token, scores
   the old values with its value head (:mod:`cmpo.value`) and runs GAE over the agent tokens.
4. **Update.** ``num_epochs`` passes over the episodes in ``num_mini_batches`` optimiser steps,
   each accumulated over micro-batches: the clipped surrogate (:mod:`cmpo.loss`) against the
   rollout log-probs, token-mean over the mini-batch's agent tokens (all processes), plus β·k3 KL
   to the reference when β > 0 (ppo: plus ``vf_coef`` × the clipped value loss). Then the engine
   gets the new weights.
5. **Log and checkpoint.**
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmpo.config import CMPOConfig


class CMPOTrainer:
    """Builds everything a run needs from a :class:`CMPOConfig`; :meth:`train` runs it.

    ``model`` / ``tokenizer`` may be passed in instead of being loaded from
    ``config.model_name_or_path``.
    """

    def __init__(self, config: CMPOConfig, *, model=None, tokenizer=None) -> None:
        from accelerate import Accelerator, PartialState
        from accelerate.utils import set_seed
        from transformers import get_scheduler

        import interactcs_gym  # noqa: F401  (registers the suite's env ids)
        from cmpo.advantage import get_estimator
        from cmpo.compat import fill_deepspeed_config, parse_flag_from_env
        from cmpo.engines import SamplingParams, make_engine, stop_token_ids_for
        from cmpo.lagrangian import make_cost_controller
        from cmpo.metrics import JsonlLog
        from cmpo.modeling import load_policy, load_reference, load_tokenizer
        from cmpo.rollout import RolloutCollector

        cfg = self.config = config
        self.output_dir = Path(cfg.output_dir)
        # the batch split depends on the number of processes (CPU ones too: `ACCELERATE_USE_CPU`)
        num_processes = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).num_processes
        cfg.check_batch(num_processes)
        self.grad_accum = cfg.gradient_accumulation_steps(num_processes)
        bf16 = cfg.bf16 if cfg.bf16 is not None else (torch.cuda.is_available()
                                                       and torch.cuda.is_bf16_supported())
        self.accelerator = acc = Accelerator(
            gradient_accumulation_steps=self.grad_accum, mixed_precision="bf16" if bf16 else "no",
            log_with=cfg.report_to or None, project_dir=str(self.output_dir))
        set_seed(cfg.seed, device_specific=True)
        fill_deepspeed_config(acc, micro_batch_size=cfg.micro_batch_size, max_grad_norm=cfg.max_grad_norm)

        if cfg.build_tiny_model and not Path(cfg.model_name_or_path).exists():
            if acc.is_main_process:
                from cmpo.tiny_model import build_tiny_model

                build_tiny_model(cfg.model_name_or_path)
            acc.wait_for_everyone()
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg)
        model = model if model is not None else load_policy(cfg)
        self.ref_model = load_reference(cfg, acc)
        self.ppo = None
        if cfg.estimator == "ppo":  # PPO: the policy gets a value head, trained in the same forward
            from cmpo.ppo import PPOAdvantages, param_groups
            from cmpo.value import PolicyWithValueHead

            self.ppo = PPOAdvantages(cfg, acc)
            model = PolicyWithValueHead(model)
            params = param_groups(model, cfg.value_head_learning_rate)
        else:
            params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                      betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)
        total_updates = cfg.max_steps * cfg.num_epochs * cfg.num_mini_batches
        self.scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer,
                                       num_warmup_steps=math.ceil(cfg.warmup_ratio * total_updates),
                                       num_training_steps=total_updates)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        acc.register_for_checkpointing(self.scheduler)

        sampling = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                  top_p=cfg.top_p, top_k=cfg.top_k,
                                  stop_token_ids=stop_token_ids_for(
                                      self.tokenizer, getattr(model, "generation_config", None)))
        # transformers samples from the prepared model itself; vLLM gets the bare one, whose
        # parameter names are the checkpoint's (no DDP "module." prefix) for the weight sync
        engine_model = self.model if cfg.engine == "transformers" else acc.unwrap_model(self.model)
        if self.ppo is not None and cfg.engine != "transformers":
            engine_model = engine_model.policy  # vLLM's weight sync: the policy's names, no head
        self.engine = make_engine(
            cfg.engine, engine_model, self.tokenizer, sampling, accelerator=acc,
            max_batch_size=cfg.generation_batch_size,
            **({} if cfg.engine != "vllm" else dict(
                mode=cfg.vllm_mode, server_base_url=cfg.vllm_server_base_url,
                server_host=cfg.vllm_server_host, server_port=cfg.vllm_server_port,
                server_timeout=cfg.vllm_server_timeout, group_port=cfg.vllm_group_port,
                tensor_parallel_size=cfg.vllm_tensor_parallel_size,
                gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                max_model_length=cfg.max_seq_len, enable_sleep_mode=cfg.vllm_enable_sleep_mode)))
        if cfg.engine == "vllm" and not cfg.recompute_old_logprobs:
            warnings.warn("engine 'vllm': the ratio's old log-probs come from vLLM's sampler, whose kernels "
                          "differ from training's; set recompute_old_logprobs: true to score them with "
                          "the training model", stacklevel=2)
        self.collector = RolloutCollector(cfg.env_id, self.engine, self.tokenizer,
                                          group_size=cfg.group_size, env_kwargs=cfg.env_kwargs,
                                          max_turns=cfg.max_turns, max_seq_len=cfg.max_seq_len)
        self.controller = make_cost_controller(cfg.cost_controller, **cfg.controller_kwargs())
        self.estimator = None if self.ppo is not None else get_estimator(cfg.estimator)
        self.estimator_kwargs = cfg.estimator_kwargs()
        self.log = JsonlLog(self.output_dir / "metrics.jsonl")
        self.dialogue_log = JsonlLog(self.output_dir / "dialogues.jsonl")
        self.step = 0

    # ------------------------------------------------------------------------------------------
    def train(self) -> list[dict[str, Any]]:
        """Run (or resume) training up to ``max_steps``; returns the metrics of every step."""
        from tqdm.auto import tqdm

        from cmpo.checkpoint import latest_checkpoint, latest_intact_checkpoint

        cfg, acc = self.config, self.accelerator
        ckpt = latest_checkpoint(self.output_dir)
        if ckpt is not None and not cfg.resume:
            raise ValueError(f"{self.output_dir} already holds a run ({ckpt.name}); continue it with "
                             "--resume, or choose another output_dir")
        if ckpt is not None:  # the newest one whose manifest verifies (warns about newer ones)
            self.load(latest_intact_checkpoint(self.output_dir))
        elif acc.is_main_process:  # a fresh run starts fresh files
            for log in (self.log, self.dialogue_log):
                log.path.unlink(missing_ok=True)
        if cfg.report_to:
            acc.init_trackers(cfg.run_name, config=_flat_config(cfg))
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="cmpo", dynamic_ncols=True,
                   disable=cfg.disable_tqdm or not acc.is_main_process)
        while self.step < cfg.max_steps:
            metrics = self.train_step()
            self.step += 1
            metrics["step"] = self.step
            if acc.is_main_process and self.step % cfg.logging_steps == 0:
                self.log.write(metrics)
            acc.log({k: v for k, v in metrics.items() if k != "step" and _finite(v)}, step=self.step)
            bar.update(1)
            bar.set_postfix({"λ": f"{metrics['cost/lambda']:.3f}",
                             "cost": f"{metrics['rollout/session_cost']:.2f}",
                             "R": f"{metrics['rollout/outcome']:.2f}",
                             "loss": f"{metrics['loss/loss']:.4f}"})
            if (cfg.save_steps and self.step % cfg.save_steps == 0) or self.step == cfg.max_steps:
                self.save()
        bar.close()
        self.finish()
        return self.log.read()

    def train_step(self) -> dict[str, Any]:
        """One CMPO step (module docstring, points 1-4); returns its metrics."""
        from accelerate.utils import gather_object

        from cmpo.metrics import family_metrics, rollout_metrics, summarize
        from cmpo.rollout import set_unfinished_outcome
        from interactcs_gym.evaluation.metrics import family_for_env

        cfg, acc = self.config, self.accelerator
        t_start = time.perf_counter()

        # 1. Rollouts: this process's share of the step's groups, G episodes per reset seed.
        seeds = step_seeds(cfg.seed, self.step, cfg.groups_per_step)
        share = cfg.groups_per_step // acc.num_processes
        seeds = seeds[acc.process_index * share:(acc.process_index + 1) * share]
        with acc.autocast():
            episodes = self.collector.collect(seeds)
        rollout = self.collector.stats

        # 2. λ_k from the batch's mean session cost J_C (all processes).
        summaries = gather_object([summarize(ep) for ep in episodes])
        mean_cost = float(np.mean([s["session_cost"] for s in summaries]))
        lam = self.controller.update(mean_cost)

        # 3. Per-turn advantages, group by group; each sampled token gets its turn's advantage
        #    (after the outcome of unfinished episodes is set, when configured; logs keep the env's).
        if cfg.unfinished_outcome is not None:
            set_unfinished_outcome(episodes, cfg.unfinished_outcome)
        if self.ppo is not None:  # ppo: per-token rewards here, GAE once step 4 scored the values
            rows = self.ppo.rows(episodes, lam)
        else:
            rows = []
            for g in range(len(seeds)):
                group = episodes[g * cfg.group_size:(g + 1) * cfg.group_size]
                turn_adv = self.estimator([ep.outcome for ep in group],
                                          [[0.0 if p is None else p for p in ep.process_rewards]
                                           for ep in group],
                                          [ep.turn_costs for ep in group], lam,
                                          **self.estimator_kwargs)
                rows += token_rows(group, turn_adv)

        # 4. Policy update: epochs x mini-batches, each accumulated over micro-batches.
        t_update = time.perf_counter()
        lr = self.scheduler.get_last_lr()[0]  # the learning rate of this step's (first) update
        if cfg.recompute_old_logprobs or cfg.needs_reference or self.ppo is not None:
            self._rescore(rows)
        value_metrics = self.ppo.advantages(rows) if self.ppo is not None else {}
        stats = self._update(rows)
        self.engine.sync_weights()

        metrics = {**rollout_metrics(summaries), **family_metrics(family_for_env(cfg.env_id), summaries),
                   **value_metrics,
                   "cost/lambda": lam, "cost/limit": cfg.cost_limit, **stats,
                   "train/lr": lr,
                   "perf/rollout_s": rollout.total_s, "perf/env_s": rollout.env_s,
                   "perf/update_s": time.perf_counter() - t_update,
                   "perf/tokens_per_s": rollout.generated_tokens / max(rollout.generation_s, 1e-9),
                   "perf/env_fraction": rollout.env_s / max(rollout.total_s, 1e-9),
                   "perf/step_s": time.perf_counter() - t_start}
        for name, value in getattr(self.controller, "terms", {}).items():
            metrics[f"cost/pid_{name}"] = value
        if acc.is_main_process and cfg.log_dialogues:
            for ep in episodes[:cfg.log_dialogues]:
                self.dialogue_log.write({"step": self.step + 1, "seed": ep.seed, "messages": ep.messages,
                                         "turn_costs": ep.turn_costs, "rewards": ep.rewards,
                                         "process_rewards": ep.process_rewards,
                                         "termination_reason": ep.termination_reason})
        return metrics

    # ------------------------------------------------------------------------------------------
    def _update(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        """Clipped-surrogate updates over ``rows`` (one per episode of this process)."""
        from cmpo.loss import clipped_surrogate_loss
        from cmpo.modeling import score_tokens
        from cmpo.ppo import clipped_value_loss

        cfg, acc = self.config, self.accelerator
        self.model.train()
        n = len(rows)
        mini_size = n // cfg.num_mini_batches
        shuffle = cfg.num_epochs * cfg.num_mini_batches > 1
        sums: dict[str, float] = {}
        tokens_seen, grad_norms = 0.0, []
        for _ in range(cfg.num_epochs):
            order = torch.randperm(n).tolist() if shuffle else list(range(n))
            for m in range(cfg.num_mini_batches):
                mini = [rows[i] for i in order[m * mini_size:(m + 1) * mini_size]]
                # Token-mean over the mini-batch's agent tokens on all processes: each process
                # divides by (global count / processes) and gradient averaging does the rest.
                local = torch.tensor(float(sum(r["mask"].sum() for r in mini)), device=acc.device)
                num_tokens = max(float(acc.gather(local).sum()) / acc.num_processes, 1.0)
                for start in range(0, mini_size, cfg.micro_batch_size):
                    batch = collate(mini[start:start + cfg.micro_batch_size],
                                    self.tokenizer.pad_token_id, acc.device)
                    with acc.accumulate(self.model):
                        logp, entropy, cols, *value = score_tokens(
                            self.model, batch["input_ids"], batch["attention_mask"], batch["mask"],
                            cfg.temperature, with_entropy=True, with_value=self.ppo is not None)
                        mask = batch["mask"][:, cols]
                        ref = batch["ref_logprobs"][:, cols] if "ref_logprobs" in batch else None
                        loss, stats = clipped_surrogate_loss(
                            logp, batch["old_logprobs"][:, cols], batch["advantages"][:, cols], mask,
                            epsilon_low=cfg.epsilon_low, epsilon_high=cfg.epsilon_high,
                            ref_logprobs=ref, beta=cfg.beta, num_tokens=num_tokens)
                        if value:  # ppo: + vf_coef x the clipped value loss
                            value_loss, value_stats = clipped_value_loss(
                                value[0], batch["old_values"][:, cols], batch["returns"][:, cols],
                                mask, cfg.cliprange_value, num_tokens=num_tokens)
                            loss = loss + cfg.vf_coef * value_loss
                            stats.update(value_stats)
                        acc.backward(loss * self.grad_accum)  # accelerate divides by grad_accum
                        if acc.sync_gradients and cfg.max_grad_norm > 0:
                            norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                            if norm is not None:  # DeepSpeed clips inside its step (gradient_clipping)
                                grad_norms.append(float(norm))
                        self.optimizer.step()
                        self.optimizer.zero_grad()
                        if acc.sync_gradients:
                            self.scheduler.step()
                    tokens = float(mask.sum())
                    stats["entropy"] = float((entropy * mask).sum() / max(tokens, 1.0))
                    stats["loss"] = float(loss.detach()) * num_tokens / max(tokens, 1.0)
                    for key, value in stats.items():  # token-weighted means over the step
                        sums[key] = sums.get(key, 0.0) + value * tokens
                    tokens_seen += tokens
        out = {f"loss/{k}": v / max(tokens_seen, 1.0) for k, v in sums.items()}
        if "loss/kl" in out:
            out["loss/kl_ref"] = out.pop("loss/kl")
        if grad_norms:
            out["loss/grad_norm"] = float(np.mean(grad_norms))
        return {k: _mean_over_processes(acc, v) for k, v in out.items()}

    @torch.no_grad()
    def _rescore(self, rows: list[dict[str, Any]]) -> None:
        """Before the update: the reference model's log-probs (β > 0 or ppo's kl_coef > 0), with
        ``recompute_old_logprobs`` the training model's own, and (ppo) the value head's old values,
        stored in each row."""
        from cmpo.modeling import score_tokens

        cfg, acc = self.config, self.accelerator
        scorers = []
        if cfg.recompute_old_logprobs or self.ppo is not None:
            scorers.append(("old_logprobs", contextlib.nullcontext(self.model)))
        if cfg.needs_reference:
            scorers.append(("ref_logprobs", self._reference()))
        for key, context in scorers:
            with_value = self.ppo is not None and key == "old_logprobs"
            with context as model, acc.autocast():
                for start in range(0, len(rows), cfg.micro_batch_size):
                    chunk = rows[start:start + cfg.micro_batch_size]
                    batch = collate(chunk, self.tokenizer.pad_token_id, acc.device)
                    logp, _, cols, *value = score_tokens(
                        model, batch["input_ids"], batch["attention_mask"], batch["mask"],
                        cfg.temperature, with_value=with_value)
                    for i, row in enumerate(chunk):
                        if key != "old_logprobs" or cfg.recompute_old_logprobs:
                            row[key] = _at_columns(logp[i], cols, len(row["input_ids"]))
                        if value:
                            row["old_values"] = _at_columns(value[0][i], cols, len(row["input_ids"]))

    @contextlib.contextmanager
    def _reference(self):
        """The reference policy: the frozen copy, or (LoRA) the policy with adapters disabled."""
        if self.ref_model is not None:
            yield self.ref_model
            return
        with self.accelerator.unwrap_model(self.model).disable_adapter():
            yield self.model

    # ------------------------------------------------------------------------------------------
    def save(self) -> Path:
        from cmpo.checkpoint import save_checkpoint

        return save_checkpoint(self.accelerator, self.output_dir, self.step,
                               {"controller": self.controller.state_dict(),
                                "config": self.config.to_dict()},
                               total_limit=self.config.save_total_limit)

    def load(self, checkpoint: str | Path) -> None:
        """Restore model, optimiser, scheduler, RNG, step and λ state from ``checkpoint``."""
        from cmpo.checkpoint import load_checkpoint

        state = load_checkpoint(self.accelerator, checkpoint)
        self.step = int(state["step"])
        self.controller.load_state_dict(state["controller"])
        self.engine.sync_weights()
        if self.accelerator.is_main_process:
            self.log.truncate_after(self.step)
            self.dialogue_log.truncate_after(self.step)
            print(f"resumed from {checkpoint} at step {self.step} (λ = {self.controller.lam:.4f})")

    def finish(self) -> None:
        """Save the final model (HF format) to ``output_dir/final``, plot, close trackers."""
        from cmpo.metrics import plot_training

        acc = self.accelerator
        acc.wait_for_everyone()
        unwrapped = acc.unwrap_model(self.model)
        unwrapped.save_pretrained(self.output_dir / "final", is_main_process=acc.is_main_process,
                                  save_function=acc.save, state_dict=acc.get_state_dict(self.model))
        if acc.is_main_process:
            self.tokenizer.save_pretrained(self.output_dir / "final")
            records = self.log.read()
            if self.config.plot and records:
                plot_training(records, self.output_dir / "training.png")
        acc.end_training()
        self.collector.close()


# ----------------------------------------------------------------------------------------------
def step_seeds(seed: int, step: int, n: int) -> list[int]:
    """The reset seeds of training step ``step``: a pure function of (seed, step)."""
    return [int(s) for s in np.random.SeedSequence([seed, step]).generate_state(n)]


def token_rows(episodes, turn_advantages) -> list[dict[str, Any]]:
    """Training rows of episodes: token ids, the per-token advantage (A_{i,t} on every sampled
    token of turn t, 0 elsewhere), the loss mask (exactly the sampled tokens) and the rollout
    log-probs."""
    from cmpo.advantage import spread_to_tokens

    rows = []
    for ep, adv in zip(episodes, turn_advantages, strict=True):
        token_adv, mask = spread_to_tokens(adv, ep.turn_spans, len(ep.token_ids))
        rows.append({"input_ids": ep.token_ids, "advantages": token_adv, "mask": mask,
                     "old_logprobs": ep.logprobs})
    return rows


_PER_TOKEN = ("advantages", "old_logprobs", "ref_logprobs", "old_values", "returns")


def collate(rows: list[dict[str, Any]], pad_token_id: int, device) -> dict[str, torch.Tensor]:
    """Right-pad episode rows into (B, L) tensors: ids, attention mask, loss mask, and the
    per-token floats the rows hold (advantages, old and reference log-probs; ppo: old values and
    returns)."""
    width = max(len(r["input_ids"]) for r in rows)
    out = {"input_ids": torch.full((len(rows), width), pad_token_id, dtype=torch.long),
           "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
           "mask": torch.zeros((len(rows), width), dtype=torch.bool)}
    floats = [k for k in _PER_TOKEN if k in rows[0]]
    for key in floats:
        out[key] = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        out["input_ids"][i, :n] = torch.as_tensor(r["input_ids"], dtype=torch.long)
        out["attention_mask"][i, :n] = 1
        out["mask"][i, :n] = torch.as_tensor(r["mask"], dtype=torch.bool)
        for key in floats:
            out[key][i, :n] = torch.as_tensor(r[key], dtype=torch.float32)
    return {k: v.to(device) for k, v in out.items()}


def _at_columns(x: torch.Tensor, cols: torch.Tensor, length: int) -> np.ndarray:
    """Scores at token columns ``cols`` (K,) spread over a row of ``length`` tokens (0 elsewhere)."""
    full = np.zeros(length, dtype=np.float32)
    keep = cols < length
    full[cols[keep].cpu().numpy()] = x[keep].float().cpu().numpy()
    return full


def _mean_over_processes(acc, value: float) -> float:
    if acc.num_processes == 1:
        return value
    return float(acc.gather(torch.tensor(value, device=acc.device)).mean())


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _flat_config(cfg: CMPOConfig) -> dict[str, Any]:
    """Config values trackers accept (numbers, strings, booleans)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
            for k, v in cfg.to_dict().items()}
