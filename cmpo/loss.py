"""The CMPO policy loss (SPEC 8.4; paper Eq. 9): a per-token clipped surrogate with clip-higher,
token-mean aggregation and an optional k3 KL penalty to a reference policy.

Tensors are (B, L): B sequences of L tokens, ``mask`` marks the policy's own (agent) tokens.
"""

from __future__ import annotations

import math

import torch

__all__ = ["clipped_surrogate_loss", "k3_kl"]


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π_θ ‖ π_ref) (Schulman 2020), non-negative and unbiased::

        k3 = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1
    """
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1.0


def _check_tensor(name: str, x: torch.Tensor, shape: torch.Size, mask: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)} (as logprobs), "
                         f"got {tuple(x.shape)}")
    bad = ~torch.isfinite(x.detach()) & mask
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name} must be finite on valid (mask=True) tokens, "
                         f"got {x.detach()[where].item()} at {name}{list(where)}")


def token_count(valid: torch.Tensor, num_tokens: float | None) -> float:
    """The token-mean's denominator: ``num_tokens`` when given (e.g. the whole mini-batch's agent
    tokens on all processes), else the valid tokens of ``valid``; it must be finite and > 0."""
    count = float(valid.sum()) if num_tokens is None else float(num_tokens)
    if not math.isfinite(count) or count <= 0:
        raise ValueError(f"the token count must be > 0 (num_tokens={num_tokens}, "
                         f"valid tokens={int(valid.sum())})")
    return count


def clipped_surrogate_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                           advantages: torch.Tensor, mask: torch.Tensor,
                           epsilon_low: float = 0.2, epsilon_high: float = 0.2,
                           ref_logprobs: torch.Tensor | None = None, beta: float = 0.0,
                           num_tokens: float | None = None,
                           ) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped policy-gradient loss, token-mean over the valid tokens (DAPO-style clip-higher)::

        ρ_j    = exp(log π_θ(y_j) − log π_old(y_j))                     π_old: the rollout policy
        ℓ_j    = −min(ρ_j·A_j, clip(ρ_j, 1 − ε_low, 1 + ε_high)·A_j) + β·k3_j
        k3_j   = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1    (only when β > 0)
        loss   = Σ_j mask_j·ℓ_j / N,   N = Σ_j mask_j  (or ``num_tokens``)

    ``num_tokens`` lets gradient accumulation divide every micro-batch by the token count of the
    whole batch, so that 8 micro-batches of 1 give the same gradient as 1 batch of 8.
    Masked-out positions may hold anything (padding, -inf): they are zeroed before use.

    Returns ``(loss, stats)``; ``stats`` (python floats over the valid tokens):
    ``clip_fraction`` (tokens whose clipped term is active, i.e. no gradient: ρ < 1 − ε_low with
    A < 0, or ρ > 1 + ε_high with A > 0), ``clip_fraction_low``, ``clip_fraction_high``,
    ``approx_kl`` (k3 estimate of KL(π_old ‖ π_θ): mean of ρ − 1 − log ρ), ``mean_ratio``,
    ``policy_loss`` (the surrogate part) and, when ``ref_logprobs`` is given, ``kl`` (mean k3 to
    the reference; it enters the loss only when β > 0).
    """
    if not isinstance(logprobs, torch.Tensor):
        raise ValueError(f"logprobs must be a torch.Tensor, got {type(logprobs).__name__}")
    if not isinstance(mask, torch.Tensor) or mask.shape != logprobs.shape:
        raise ValueError(f"mask must be a torch.Tensor of shape {tuple(logprobs.shape)}")
    valid = mask.to(torch.bool)
    for name, tensor in (("logprobs", logprobs), ("old_logprobs", old_logprobs),
                         ("advantages", advantages)):
        _check_tensor(name, tensor, logprobs.shape, valid)
    for name, value in (("epsilon_low", epsilon_low), ("epsilon_high", epsilon_high),
                        ("beta", beta)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if epsilon_low >= 1:
        raise ValueError(f"epsilon_low must be < 1 (the ratio is clipped at 1 - epsilon_low), "
                         f"got {epsilon_low}")
    if beta > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs (the reference model's log-probs)")
    if ref_logprobs is not None:
        _check_tensor("ref_logprobs", ref_logprobs, logprobs.shape, valid)
    count = token_count(valid, num_tokens)

    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    logp = torch.where(valid, logprobs, zero)
    old = torch.where(valid, old_logprobs.detach(), zero)
    adv = torch.where(valid, advantages.detach().to(logprobs.dtype), zero)
    log_ratio = logp - old
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    policy_term = -torch.minimum(ratio * adv, clipped * adv)
    per_token = policy_term
    if ref_logprobs is not None:
        kl_term = k3_kl(logp, torch.where(valid, ref_logprobs.detach(), zero))
        if beta > 0:
            per_token = per_token + beta * kl_term
    weights = valid.to(logprobs.dtype)
    loss = (per_token * weights).sum() / count

    with torch.no_grad():
        n_valid = max(int(valid.sum()), 1)

        def token_mean(x: torch.Tensor) -> float:
            return float((x.to(logprobs.dtype) * weights).sum() / n_valid)

        low = (ratio < 1.0 - epsilon_low) & (adv < 0)
        high = (ratio > 1.0 + epsilon_high) & (adv > 0)
        stats = {
            "clip_fraction": token_mean(low | high),
            "clip_fraction_low": token_mean(low),
            "clip_fraction_high": token_mean(high),
            "approx_kl": token_mean(ratio - 1.0 - log_ratio),
            "mean_ratio": token_mean(ratio),
            "policy_loss": float((policy_term * weights).sum() / count),
        }
        if ref_logprobs is not None:
            stats["kl"] = token_mean(kl_term)
    return loss, stats
