"""The clipped surrogate loss (cmpo.loss) against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from cmpo.loss import clipped_surrogate_loss, k3_kl  # noqa: E402

LN = math.log


def batch(ratios, advantages, mask=None, old=-1.0):
    """(logprobs with grad, old_logprobs, advantages, mask) for one sequence with given ratios."""
    old_lp = torch.full((1, len(ratios)), old, dtype=torch.float64)
    logp = (old_lp + torch.tensor([[LN(r) for r in ratios]], dtype=torch.float64)).requires_grad_()
    adv = torch.tensor([advantages], dtype=torch.float64)
    mask = torch.tensor([mask or [1] * len(ratios)], dtype=torch.bool)
    return logp, old_lp, adv, mask


def test_clipping_on_both_sides_and_token_mean():
    # token 0: ρ=1.5, A=+1 -> min(1.5, clip 1.2) = 1.2  (high clip active) -> ℓ = -1.2
    # token 1: ρ=0.5, A=-2 -> min(-1.0, 0.8·-2 = -1.6) = -1.6 (low clip active) -> ℓ = +1.6
    # token 2: ρ=1.0, A=0.5 -> 0.5 -> ℓ = -0.5
    # token 3: masked out (holds nan: must not leak)
    logp, old, adv, mask = batch([1.5, 0.5, 1.0, 1.0], [1.0, -2.0, 0.5, 7.0], [1, 1, 1, 0])
    with torch.no_grad():
        logp[0, 3] = math.nan
    loss, stats = clipped_surrogate_loss(logp, old, adv, mask, epsilon_low=0.2, epsilon_high=0.2)
    assert loss.item() == pytest.approx((-1.2 + 1.6 - 0.5) / 3)        # = -0.0333...
    assert stats["clip_fraction"] == pytest.approx(2 / 3)
    assert stats["clip_fraction_low"] == pytest.approx(1 / 3)
    assert stats["clip_fraction_high"] == pytest.approx(1 / 3)
    assert stats["mean_ratio"] == pytest.approx((1.5 + 0.5 + 1.0) / 3)
    # approx KL = mean(ρ - 1 - ln ρ) = ((0.5 - ln 1.5) + (-0.5 + ln 2) + 0)/3
    assert stats["approx_kl"] == pytest.approx((0.5 - LN(1.5) - 0.5 + LN(2)) / 3)
    assert stats["policy_loss"] == pytest.approx(loss.item())
    assert "kl" not in stats
    # gradient: clipped tokens get none; token 2: dℓ/dlogp = -A·ρ/N = -0.5/3; masked: none
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([0.0, 0.0, -0.5 / 3, 0.0])


def test_pessimistic_side_is_not_clipped():
    # ρ=1.5 with A=-1: min(-1.5, -1.2) = -1.5 -> ℓ = 1.5, gradient flows (dℓ/dlogp = -A·ρ/N = 1.5/2)
    # ρ=0.5 with A=+1: min(0.5, 0.8) = 0.5 -> ℓ = -0.5, gradient -0.5/2
    logp, old, adv, mask = batch([1.5, 0.5], [-1.0, 1.0])
    loss, stats = clipped_surrogate_loss(logp, old, adv, mask)
    assert loss.item() == pytest.approx((1.5 - 0.5) / 2)
    assert stats["clip_fraction"] == 0.0
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([0.75, -0.25])


def test_clip_higher():
    # ρ = 1.25, A = +1: symmetric ε = 0.2 clips at 1.2; ε_high = 0.28 lets 1.25 through
    logp, old, adv, mask = batch([1.25], [1.0])
    loss, stats = clipped_surrogate_loss(logp, old, adv, mask, epsilon_low=0.2, epsilon_high=0.2)
    assert loss.item() == pytest.approx(-1.2) and stats["clip_fraction_high"] == 1.0
    loss, stats = clipped_surrogate_loss(logp, old, adv, mask, epsilon_low=0.2, epsilon_high=0.28)
    assert loss.item() == pytest.approx(-1.25) and stats["clip_fraction"] == 0.0


def test_gradient_step_follows_the_advantage():
    # on-policy (ρ = 1): one SGD step raises log π of A > 0 tokens and lowers A < 0 tokens
    logp, old, adv, mask = batch([1.0, 1.0, 1.0], [2.0, -1.0, 0.0], old=-2.0)
    loss, _ = clipped_surrogate_loss(logp, old, adv, mask)
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-2 / 3, 1 / 3, 0.0])   # -A/N
    stepped = logp.detach() - 0.1 * logp.grad
    assert stepped[0, 0] > -2.0 and stepped[0, 1] < -2.0 and stepped[0, 2] == -2.0


def test_k3_kl_value_and_penalty():
    # ref - logp = ln 2: k3 = 2 - ln 2 - 1 = 0.306853; ref - logp = -ln 2: k3 = 0.5 + ln 2 - 1
    logp, old, adv, mask = batch([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    ref = logp.detach() + torch.tensor([[LN(2), -LN(2), 0.0]], dtype=torch.float64)
    k3 = k3_kl(logp.detach(), ref)
    assert k3[0].tolist() == pytest.approx([1 - LN(2), LN(2) - 0.5, 0.0])
    mean_k3 = (1 - LN(2) + LN(2) - 0.5) / 3                 # = 0.5/3
    loss, stats = clipped_surrogate_loss(logp, old, adv, mask, ref_logprobs=ref, beta=0.1)
    assert stats["kl"] == pytest.approx(mean_k3)
    assert loss.item() == pytest.approx(-1.0 + 0.1 * mean_k3)
    assert stats["policy_loss"] == pytest.approx(-1.0)
    # dk3/dlogp = 1 - exp(ref - logp): [1 - 2, 1 - 0.5, 0] -> the penalty pulls logp toward ref
    loss.backward()
    expected = [(-1 + 0.1 * -1) / 3, (-1 + 0.1 * 0.5) / 3, -1 / 3]
    assert logp.grad[0].tolist() == pytest.approx(expected)
    # ref given with beta = 0: KL is reported, not added
    logp2, old2, adv2, mask2 = batch([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    loss, stats = clipped_surrogate_loss(logp2, old2, adv2, mask2, ref_logprobs=ref, beta=0.0)
    assert loss.item() == pytest.approx(-1.0) and stats["kl"] == pytest.approx(mean_k3)


def test_token_mean_over_the_whole_batch_and_accumulation():
    # two sequences with 1 and 3 valid tokens: token-mean weighs every token alike, 4 in all
    logp = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    old = torch.zeros(2, 3, dtype=torch.float64)
    adv = torch.tensor([[4.0, 9.0, 9.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    loss, _ = clipped_surrogate_loss(logp, old, adv, mask)
    assert loss.item() == pytest.approx(-(4 + 1 + 1 + 1) / 4)    # not the mean of means, -2.5
    # accumulation: each micro-batch divided by the batch's 4 tokens adds up to the same loss
    parts = [clipped_surrogate_loss(logp[i:i + 1], old[i:i + 1], adv[i:i + 1], mask[i:i + 1],
                                    num_tokens=4)[0] for i in range(2)]
    assert sum(p.item() for p in parts) == pytest.approx(loss.item())


@pytest.mark.parametrize("field", ["logprobs", "old_logprobs", "advantages", "ref_logprobs"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_valid_tokens_are_rejected(field, bad):
    logp, old, adv, mask = batch([1.0, 1.0], [1.0, 1.0])
    tensors = {"logprobs": logp.detach().clone(), "old_logprobs": old, "advantages": adv,
               "ref_logprobs": old.clone()}
    tensors[field][0, 1] = bad
    with pytest.raises(ValueError, match=f"{field} must be finite"):
        clipped_surrogate_loss(tensors["logprobs"], tensors["old_logprobs"],
                               tensors["advantages"], mask, ref_logprobs=tensors["ref_logprobs"],
                               beta=0.1)


def test_bad_arguments_are_rejected():
    logp, old, adv, mask = batch([1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        clipped_surrogate_loss(logp, old[:, :1], adv, mask)
    with pytest.raises(ValueError, match="ref_logprobs"):
        clipped_surrogate_loss(logp, old, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="epsilon_high"):
        clipped_surrogate_loss(logp, old, adv, mask, epsilon_high=math.nan)
    with pytest.raises(ValueError, match="epsilon_low"):
        clipped_surrogate_loss(logp, old, adv, mask, epsilon_low=1.0)
    with pytest.raises(ValueError, match="token count"):
        clipped_surrogate_loss(logp, old, adv, torch.zeros_like(mask))
