"""The token-level PPO baseline (SPEC 8.4; Schulman et al. 2017, Ouyang et al. 2022).

A multi-turn dialogue is one trajectory whose actions are the agent's sampled tokens; the tokens of
the system, the user and the env between turns are context, not actions. Per dialogue:

1. **Per-token rewards** (:func:`token_rewards`). Every agent token gets 0 except the *last sampled
   token of each agent turn t* (the end-of-turn token when the turn stopped by itself), which gets
   that turn's reward::

       r_{end_t} = w_o·r^env_t + w_p·p_t − λ·c_t          (sum_norm: divided by 1 + λ)

   r^env_t is the env's reward of the step that turn t triggered (FDS: 0 until the terminal step,
   which carries the outcome R_i; their sum is R_i), p_t the turn's process reward (0 when the env
   reports none), c_t its cost ``info["cost"]`` and λ the cost controller's multiplier: the cost
   penalty lands on the turn that incurred it. With ``kl_coef`` > 0 every agent token j also pays
   −kl_coef·(log π_old(y_j) − log π_ref(y_j)), a per-token KL penalty to the reference.
2. **Values** V_j = V(s_j) from the value head (:mod:`cmpo.value`) at the column that predicts
   token j, scored before the update (the "old" values).
3. **GAE over the agent tokens only** (:func:`masked_gae`): the agent tokens of the whole dialogue,
   in order, are the time steps 1..N of the recursion (user/env tokens are skipped, not steps)::

       δ_n = r_n + γ·V_{n+1} − V_n,   A_n = δ_n + γ·λ_GAE·A_{n+1},   V_{N+1} = 0, A_{N+1} = 0
       R_n = A_n + V_n                 (the value target)

   then, optionally, the advantages are whitened over all agent tokens of the step (all processes):
   A ← (A − mean A) / (std A + 1e-8).
4. **Loss**: the clipped surrogate (:func:`cmpo.loss.clipped_surrogate_loss`) with these A, plus
   ``vf_coef`` × the clipped value loss (:func:`clipped_value_loss`).

An episode cut short (``max_turns``, ``context_length``) ends its recursion there (V_{N+1} = 0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from cmpo.advantage import gae_advantages
from cmpo.loss import token_count

__all__ = ["PPOAdvantages", "clipped_value_loss", "masked_gae", "param_groups", "token_rewards",
           "whiten"]


def token_rewards(episode, lam: float, *, w_o: float = 1.0, w_p: float = 1.0,
                  use_cost: bool = True, sum_norm: bool = False) -> np.ndarray:
    """Per-token rewards of one episode (module docstring, point 1), float64 of ``len(token_ids)``.

    ``episode`` is a :class:`cmpo.rollout.Episode` (``turn_spans``, ``rewards``,
    ``process_rewards``, ``turn_costs``); ``use_cost=False`` leaves the cost out (λ taken as 0).
    """
    lam = float(lam)
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0 (a Lagrange multiplier), got {lam}")
    if not use_cost:
        lam = 0.0
    n_turns = len(episode.turn_spans)
    if not n_turns == len(episode.rewards) == len(episode.process_rewards) == len(episode.turn_costs):
        raise ValueError(f"episode has {n_turns} turn spans but {len(episode.rewards)} rewards, "
                         f"{len(episode.process_rewards)} process rewards and "
                         f"{len(episode.turn_costs)} costs")
    rewards = np.zeros(len(episode.token_ids), dtype=np.float64)
    for t, (start, end) in enumerate(episode.turn_spans):
        if end <= start:
            raise ValueError(f"turn {t} has no sampled tokens (span {(start, end)}): its reward has "
                             "no token to land on")
        p = episode.process_rewards[t]
        r = w_o * episode.rewards[t] + w_p * (0.0 if p is None else p) - lam * episode.turn_costs[t]
        rewards[end - 1] += r / (1.0 + lam) if sum_norm else r
    return rewards


def masked_gae(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float,
               lam: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE over each row's masked (agent) tokens only (module docstring, point 3).

    ``rewards``, ``values`` and ``mask`` are (B, L) (or (L,)); row b's trajectory is
    ``rewards[b, mask[b]]`` in order, the unmasked positions are skipped by the recursion and get
    advantage and return 0. ``lam`` is λ_GAE. Returns (advantages, returns), float64 (B, L).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if not rewards.shape == values.shape == mask.shape:
        raise ValueError(f"rewards, values and mask must have one shape, got {rewards.shape}, "
                         f"{values.shape} and {mask.shape}")
    if rewards.ndim == 1:
        adv, ret = masked_gae(rewards[None], values[None], mask[None], gamma, lam)
        return adv[0], ret[0]
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (L,) or (B, L), got shape {rewards.shape}")
    stray = ~mask & (rewards != 0)
    if stray.any():
        b, j = (int(i) for i in np.argwhere(stray)[0])
        raise ValueError(f"rewards[{b}, {j}] = {rewards[b, j]} sits on a masked-out token: rewards "
                         "must land on agent tokens")
    # Agent tokens packed to the left, zero-padded: a padded step has r = 0, V = 0, so δ = 0 there
    # and the last real step bootstraps from V = 0, exactly the unpadded recursion.
    counts = mask.sum(axis=1)
    steps = np.arange(max(int(counts.max(initial=0)), 1))
    packed = steps[None, :] < counts[:, None]
    r = np.zeros(packed.shape)
    v = np.zeros(packed.shape)
    r[packed], v[packed] = rewards[mask], values[mask]
    adv_packed, ret_packed = gae_advantages(r, v, gamma, lam)
    advantages = np.zeros_like(rewards)
    returns = np.zeros_like(rewards)
    advantages[mask], returns[mask] = adv_packed[packed], ret_packed[packed]
    return advantages, returns


def whiten(x: np.ndarray, mask: np.ndarray, mean: float, std: float, eps: float = 1e-8) -> np.ndarray:
    """(x − mean) / (std + eps) on the masked entries, 0 elsewhere (mean and std given: those of
    all processes' agent tokens)."""
    return np.where(mask, (x - mean) / (std + eps), 0.0)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, cliprange_value: float, num_tokens: float | None = None,
                       ) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped value loss, token-mean over the valid tokens::

        V^clip_j = clip(V_j, V^old_j − ε_v, V^old_j + ε_v)
        ℓ_j      = 0.5·max((V_j − R_j)², (V^clip_j − R_j)²)
        loss     = Σ_j mask_j·ℓ_j / N,   N = Σ_j mask_j  (or ``num_tokens``)

    ``values`` are the current value head's V (with gradient), ``old_values`` the rollout's and
    ``returns`` the GAE targets R. Returns ``(loss, stats)``: ``value_loss`` (the mean of ℓ over
    the valid tokens) and ``value_clip_fraction`` (valid tokens where the clipped term is the
    larger, so no gradient flows).
    """
    if not isinstance(values, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise ValueError("values and mask must be torch.Tensors")
    for name, x in (("old_values", old_values), ("returns", returns), ("mask", mask)):
        if x.shape != values.shape:
            raise ValueError(f"{name} must have the shape of values {tuple(values.shape)}, "
                             f"got {tuple(x.shape)}")
    if not math.isfinite(cliprange_value) or cliprange_value <= 0:
        raise ValueError(f"cliprange_value must be a finite number > 0, got {cliprange_value}")
    valid = mask.to(torch.bool)
    count = token_count(valid, num_tokens)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    v = torch.where(valid, values, zero)
    old = torch.where(valid, old_values.detach().to(values.dtype), zero)
    target = torch.where(valid, returns.detach().to(values.dtype), zero)
    v_clipped = old + torch.clamp(v - old, -cliprange_value, cliprange_value)
    unclipped_sq = (v - target) ** 2
    clipped_sq = (v_clipped - target) ** 2
    weights = valid.to(values.dtype)
    loss = (0.5 * torch.maximum(unclipped_sq, clipped_sq) * weights).sum() / count
    with torch.no_grad():
        n_valid = max(int(valid.sum()), 1)
        per_token = 0.5 * torch.maximum(unclipped_sq, clipped_sq) * weights
        stats = {"value_loss": float(per_token.sum() / n_valid),
                 "value_clip_fraction": float(((clipped_sq > unclipped_sq) & valid).sum() / n_valid)}
    return loss, stats


def param_groups(model, value_head_lr: float | None = None) -> list[dict[str, Any]]:
    """The optimiser's parameter groups of a :class:`cmpo.value.PolicyWithValueHead`: the policy's
    trainable parameters, and the value head's (at ``value_head_lr`` when given)."""
    head = [p for p in model.v_head.parameters() if p.requires_grad]
    head_ids = {id(p) for p in head}
    policy = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    return [{"params": policy},
            {"params": head, **({} if value_head_lr is None else {"lr": value_head_lr})}]


class PPOAdvantages:
    """The trainer's PPO step 3: rewards on tokens, then (after the old values are scored) GAE,
    whitening and the value targets, stored in the trainer's rows."""

    def __init__(self, config, accelerator) -> None:
        self.config = config
        self.accelerator = accelerator

    def rows(self, episodes, lam: float) -> list[dict[str, Any]]:
        """One training row per episode: ids, loss mask, rollout log-probs and per-token rewards."""
        cfg = self.config
        w_o = 1.0 if cfg.w_o is None else cfg.w_o
        w_p = 1.0 if cfg.w_p is None else cfg.w_p
        rows = []
        for ep in episodes:
            rows.append({"input_ids": ep.token_ids, "mask": np.asarray(ep.agent_mask(), dtype=bool),
                         "old_logprobs": ep.logprobs,
                         "rewards": token_rewards(ep, lam, w_o=w_o, w_p=w_p, use_cost=cfg.use_cost,
                                                  sum_norm=cfg.sum_norm)})
        return rows

    def advantages(self, rows: list[dict[str, Any]]) -> dict[str, float]:
        """Fill ``advantages`` and ``returns`` of every row from its ``rewards`` and ``old_values``
        (and, with ``kl_coef`` > 0, its ``ref_logprobs``); returns the ``rollout/`` value metrics."""
        cfg = self.config
        mask = _pad([r["mask"] for r in rows], bool)
        rewards = _pad([r["rewards"] for r in rows])
        values = _pad([r["old_values"] for r in rows])
        if cfg.kl_coef > 0:
            kl = _pad([r["old_logprobs"] for r in rows]) - _pad([r["ref_logprobs"] for r in rows])
            rewards = rewards - cfg.kl_coef * np.where(mask, kl, 0.0)
        adv, ret = masked_gae(rewards, values, mask, cfg.gamma, cfg.gae_lambda)
        count, adv_sum, adv_sq, val_sum, ret_sum, ret_sq, err_sum, err_sq = self._sums(
            mask.sum(), adv[mask].sum(), (adv[mask] ** 2).sum(), values[mask].sum(),
            ret[mask].sum(), (ret[mask] ** 2).sum(), (ret - values)[mask].sum(),
            ((ret - values)[mask] ** 2).sum())
        n = max(count, 1.0)
        adv_mean = adv_sum / n
        if cfg.whiten_advantages:
            adv = whiten(adv, mask, adv_mean, math.sqrt(max(adv_sq / n - adv_mean ** 2, 0.0)))
        for i, row in enumerate(rows):
            width = len(row["input_ids"])
            row["advantages"] = adv[i, :width].astype(np.float32)
            row["returns"] = ret[i, :width].astype(np.float32)
        # explained variance 1 − Var(R − V)/Var(R): 1 for a perfect value head, 0 for the mean
        ret_var = ret_sq / n - (ret_sum / n) ** 2
        err_var = err_sq / n - (err_sum / n) ** 2
        return {"rollout/value_mean": val_sum / n, "rollout/return_mean": ret_sum / n,
                "rollout/advantage_mean": adv_mean,
                "rollout/explained_variance": float("nan") if ret_var <= 1e-12
                else 1.0 - err_var / ret_var}

    def _sums(self, *values) -> list[float]:
        """Sums over all processes (float64, on the CPU where the accelerator allows)."""
        local = torch.tensor([float(v) for v in values], dtype=torch.float64)
        acc = self.accelerator
        if acc is None or acc.num_processes == 1:
            return local.tolist()
        return acc.reduce(local.to(acc.device), reduction="sum").cpu().tolist()


def _pad(rows, dtype=np.float64) -> np.ndarray:
    width = max(len(r) for r in rows)
    out = np.zeros((len(rows), width), dtype=dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out
