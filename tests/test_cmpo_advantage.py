"""Advantage estimators (cmpo.advantage) against hand-computed numbers.

The reference group: G = 2 rollouts x 3 turns, λ = 0.5,
    R = [1, 0]
    p = [[1.0, 0.5, 0.0], [0.5, 1.0, 1.0]]
    c = [[0, 1, 0], [0, 0, 0]]              (rollout 0 pays a voucher at turn 2; C = [1, 0])
eps = 0 in the hand-computed cases so the numbers are exact; one test checks eps itself.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cmpo.advantage import (
    ESTIMATORS,
    capo_advantages,
    estimator_options,
    gae_advantages,
    get_estimator,
    grpo_advantages,
    hybrid_advantages,
    spread_to_tokens,
)

R = [1.0, 0.0]
P = [[1.0, 0.5, 0.0], [0.5, 1.0, 1.0]]
C = [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
LAM = 0.5
S2 = math.sqrt(2.0)


def check(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert isinstance(g, np.ndarray) and g.shape == (len(e),)
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-9)


# -- cmpo: the hybrid advantage ------------------------------------------------------------------
# u = R + p = [2, 1.5, 1 | 0.5, 1, 1]; mean = 7/6; deviations = [5/6, 1/3, -1/6 | -2/3, -1/6, -1/6]
# var = (25 + 4 + 1 + 16 + 1 + 1)/36/6 = 2/9, std = √2/3, so ũ = dev·3/√2:
#     ũ = [5/(2√2), 1/√2, -1/(2√2) | -√2, -1/(2√2), -1/(2√2)]
U_TILDE = [[5 / (2 * S2), 1 / S2, -1 / (2 * S2)], [-S2, -1 / (2 * S2), -1 / (2 * S2)]]


def test_hybrid_turn_cost():
    # A = ũ - 0.5·c_{i,t}: only turn 2 of rollout 0 pays: 1/√2 - 0.5 = 0.207107
    expected = [[5 / (2 * S2), 1 / S2 - 0.5, -1 / (2 * S2)], U_TILDE[1]]
    check(hybrid_advantages(R, P, C, LAM, eps=0.0), expected)
    check(get_estimator("cmpo")(R, P, C, LAM, eps=0.0), expected)


def test_hybrid_session_cost():
    # ĉ = C_i on every turn: rollout 0 loses 0.5·1 on all three turns, rollout 1 nothing.
    expected = [[5 / (2 * S2) - 0.5, 1 / S2 - 0.5, -1 / (2 * S2) - 0.5], U_TILDE[1]]
    check(hybrid_advantages(R, P, C, LAM, cost_signal="session", eps=0.0), expected)


def test_hybrid_sum_norm():
    # (ũ - λc)/(1 + λ) = turn-cost advantages / 1.5
    turn = [[5 / (2 * S2), 1 / S2 - 0.5, -1 / (2 * S2)], U_TILDE[1]]
    expected = [[a / 1.5 for a in row] for row in turn]
    check(hybrid_advantages(R, P, C, LAM, sum_norm=True, eps=0.0), expected)
    # session + sum_norm: rollout 0 = (ũ - 0.5)/1.5
    expected = [[(u - 0.5) / 1.5 for u in U_TILDE[0]], [u / 1.5 for u in U_TILDE[1]]]
    check(hybrid_advantages(R, P, C, LAM, cost_signal="session", sum_norm=True, eps=0.0), expected)


def test_hybrid_weights_no_process_reward():
    # w_o = 2, w_p = 0: u = [2, 2, 2 | 0, 0, 0], mean 1, std 1 -> ũ = [1, 1, 1 | -1, -1, -1]
    check(hybrid_advantages(R, P, C, LAM, w_o=2.0, w_p=0.0, eps=0.0),
          [[1.0, 0.5, 1.0], [-1.0, -1.0, -1.0]])


def test_hybrid_weights_no_outcome():
    # w_o = 0: u = p = [1, .5, 0 | .5, 1, 1], mean 2/3, dev = [1/3, -1/6, -2/3 | -1/6, 1/3, 1/3]
    # var = (4 + 1 + 16 + 1 + 4 + 4)/36/6 = 5/36, std = √5/6 -> ũ = dev·6/√5
    s5 = math.sqrt(5.0)
    expected = [[2 / s5, -1 / s5 - 0.5, -4 / s5], [-1 / s5, 2 / s5, 2 / s5]]
    check(hybrid_advantages(R, P, C, LAM, w_o=0.0, eps=0.0), expected)


def test_hybrid_unequal_weights():
    # w_o = 2, w_p = 0.5: u = [2.5, 2.25, 2 | 0.25, 0.5, 0.5], mean 4/3,
    # dev = [7/6, 11/12, 2/3 | -13/12, -5/6, -5/6]; var = (196+121+64+169+100+100)/144/6 = 125/144
    std = math.sqrt(125) / 12
    dev = [[7 / 6, 11 / 12, 2 / 3], [-13 / 12, -5 / 6, -5 / 6]]
    expected = [[d / std for d in dev[0]], [d / std for d in dev[1]]]
    expected[0][1] -= 0.5
    check(hybrid_advantages(R, P, C, LAM, w_o=2.0, w_p=0.5, eps=0.0), expected)


def test_hybrid_without_cost_term():
    # use_cost=False is λ = 0: A = ũ
    check(hybrid_advantages(R, P, C, LAM, use_cost=False, eps=0.0), U_TILDE)
    check(hybrid_advantages(R, P, C, 0.0, eps=0.0), U_TILDE)


def test_eps_is_added_to_the_std():
    # ũ = dev / (std + eps): with eps = std = √2/3 every ũ halves
    got = hybrid_advantages(R, P, C, 0.0, eps=S2 / 3)
    check(got, [[u / 2 for u in row] for row in U_TILDE])


# -- grpo ---------------------------------------------------------------------------------------
def test_grpo_one_advantage_per_rollout():
    # Ã = (R - 0.5)/0.5 = [1, -1]; A = Ã - λ·C_i = [1 - 0.5, -1] on every turn
    check(grpo_advantages(R, P, C, LAM, eps=0.0), [[0.5] * 3, [-1.0] * 3])
    # sum_norm: / 1.5
    check(get_estimator("grpo")(R, P, C, LAM, sum_norm=True, eps=0.0), [[1 / 3] * 3, [-2 / 3] * 3])
    # the process rewards play no part
    check(grpo_advantages(R, [[0, 0, 0], [0, 0, 0]], C, LAM, eps=0.0), [[0.5] * 3, [-1.0] * 3])
    check(grpo_advantages(R, P, C, LAM, use_cost=False, eps=0.0), [[1.0] * 3, [-1.0] * 3])


# -- capo ---------------------------------------------------------------------------------------
def test_capo_flags_bad_turns_outcome_dominant():
    # flags (p < 0.5): [0, 0, 1 | 0, 0, 0]; r = 2R - flag = [2, 2, 1 | 0, 0, 0], mean 5/6
    # dev = [7/6, 7/6, 1/6 | -5/6, -5/6, -5/6]; var = (49+49+1+75)/36/6 = 29/36, std = √29/6
    std = math.sqrt(29) / 6
    dev = [[7 / 6, 7 / 6, 1 / 6], [-5 / 6, -5 / 6, -5 / 6]]
    tilde = [[d / std for d in row] for row in dev]
    turn = [[tilde[0][0], tilde[0][1] - 0.5, tilde[0][2]], tilde[1]]
    check(capo_advantages(R, P, C, LAM, eps=0.0), turn)
    check(get_estimator("capo")(R, P, C, LAM, eps=0.0), turn)
    session = [[t - 0.5 for t in tilde[0]], tilde[1]]
    check(capo_advantages(R, P, C, LAM, cost_signal="session", eps=0.0), session)
    check(capo_advantages(R, P, C, LAM, sum_norm=True, eps=0.0),
          [[a / 1.5 for a in row] for row in turn])
    # outcome-dominant: the successful rollout's flagged turn still beats every failed clean turn
    adv = capo_advantages(R, P, C, 0.0, eps=0.0)
    assert adv[0].min() > adv[1].max()


def test_capo_weights_and_threshold():
    # w_o = 1, w_p = 1, threshold 0.75 flags p = 0.5 too: flags [0, 1, 1 | 1, 0, 0]
    # r = [1, 0, 0 | -1, 0, 0]; mean 0; var = 2/6 = 1/3 -> ũ = r·√3
    s3 = math.sqrt(3.0)
    check(capo_advantages(R, P, C, 0.0, w_o=1.0, w_p=1.0, flag_threshold=0.75, eps=0.0),
          [[s3, 0.0, 0.0], [-s3, 0.0, 0.0]])


# -- edge cases ---------------------------------------------------------------------------------
def test_single_rollout_group():
    # G = 1: u = [2, 1.5, 1], mean 1.5, std = √(0.5/3) = 1/√6 -> ũ = [√6/2, 0, -√6/2]
    half6 = math.sqrt(6) / 2
    check(hybrid_advantages([1.0], [P[0]], [C[0]], LAM, eps=0.0), [[half6, -0.5, -half6]])
    # GRPO with G = 1 has no baseline to compare with: Ã = 0, only the cost remains
    check(grpo_advantages([1.0], [P[0]], [C[0]], LAM), [[-0.5, -0.5, -0.5]])


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_all_equal_utilities_give_zero_utility_advantage(name):
    # zero std: no utility signal (and no 0/0 even with eps = 0); only the cost term remains
    same_p = [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
    got = get_estimator(name)([0.3, 0.3], same_p, C, LAM, eps=0.0)
    expected = [[-0.5] * 3, [0.0] * 3] if name == "grpo" else [[0.0, -0.5, 0.0], [0.0] * 3]
    check(got, expected)
    # 0.1 + 0.2 style rounding noise must not turn into ±1 advantages either
    got = get_estimator(name)([0.1 + 0.2, 0.3], same_p, C, 0.0)
    assert max(np.abs(a).max() for a in got) < 1e-6


def test_rollout_without_turns():
    # cmpo/capo: the empty rollout adds nothing to U; the others are unchanged
    got = hybrid_advantages([1.0, 0.7, 0.0], [P[0], [], P[1]], [C[0], [], C[1]], LAM, eps=0.0)
    check(got, [[5 / (2 * S2), 1 / S2 - 0.5, -1 / (2 * S2)], [], U_TILDE[1]])
    # grpo: its outcome still counts: R = [1, 0.5, 0], mean 0.5, std = 1/√6 -> Ã = [√6/2, 0, -√6/2]
    half6 = math.sqrt(6) / 2
    got = grpo_advantages([1.0, 0.5, 0.0], [P[0], [], P[1]], [C[0], [], C[1]], LAM, eps=0.0)
    check(got, [[half6 - 0.5] * 3, [], [-half6] * 3])
    # a group where nobody took a turn
    for name in ESTIMATORS:
        check(get_estimator(name)([1.0, 0.0], [[], []], [[], []], LAM), [[], []])


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("field, bad, message", [
    ("outcomes", [1.0, math.nan], r"outcomes must be finite, got nan at outcomes\[1\]"),
    ("process", [[1.0, 0.5, 0.0], [0.5, math.inf, 1.0]], r"process\[1\] must be finite"),
    ("costs", [[0.0, -math.inf, 0.0], [0.0, 0.0, 0.0]], r"costs\[0\] must be finite"),
    ("lam", math.nan, "lam must be finite"),
    ("lam", -0.1, "lam must be >= 0"),
    ("costs", [[0.0, -1.0, 0.0], [0.0, 0.0, 0.0]], r"costs must be >= 0.*costs\[0\]\[1\]"),
    ("process", [[1.0, 0.5], [0.5, 1.0, 1.0]], "rollout 0: process has 2 turns but costs has 3"),
    ("outcomes", [1.0], "one entry per rollout"),
    ("outcomes", [], "at least one rollout"),
    ("process", "abc", "process must be a sequence"),
])
def test_bad_input_is_rejected(name, field, bad, message):
    args = {"outcomes": R, "process": P, "costs": C, "lam": LAM, field: bad}
    with pytest.raises(ValueError, match=message):
        get_estimator(name)(args["outcomes"], args["process"], args["costs"], args["lam"])


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="cost_signal"):
        hybrid_advantages(R, P, C, LAM, cost_signal="episode")
    with pytest.raises(ValueError, match="w_p must be finite"):
        hybrid_advantages(R, P, C, LAM, w_p=math.nan)
    with pytest.raises(ValueError, match="eps"):
        capo_advantages(R, P, C, LAM, eps=-1.0)
    with pytest.raises(TypeError):
        grpo_advantages(R, P, C, LAM, cost_signal="turn")    # GRPO's cost is per session


# -- registry -----------------------------------------------------------------------------------
def test_registry_and_options():
    assert sorted(ESTIMATORS) == ["capo", "cmpo", "grpo"]
    assert estimator_options("cmpo") == {"w_o": 1.0, "w_p": 1.0, "cost_signal": "turn",
                                         "sum_norm": False, "eps": 1e-6, "use_cost": True}
    assert estimator_options("capo")["w_o"] == 2.0 and estimator_options("capo")["w_p"] == 1.0
    assert set(estimator_options("grpo")) == {"sum_norm", "eps", "use_cost"}
    with pytest.raises(ValueError, match="gae_advantages"):
        get_estimator("ppo")
    with pytest.raises(ValueError, match="unknown advantage estimator 'gspo'"):
        get_estimator("gspo")


# -- tokens -------------------------------------------------------------------------------------
def test_spread_to_tokens():
    # tokens 0-1 system/user, 2-3 turn 1, 4-5 user, 6-8 turn 2, 9 padding
    adv, mask = spread_to_tokens([0.5, -1.0], [(2, 4), (6, 9)], length=10)
    np.testing.assert_array_equal(adv, [0, 0, 0.5, 0.5, 0, 0, -1, -1, -1, 0])
    np.testing.assert_array_equal(mask, [0, 0, 1, 1, 0, 0, 1, 1, 1, 0])
    assert adv.dtype == np.float32 and mask.dtype == bool
    adv, mask = spread_to_tokens([], [], length=4)          # a rollout without turns
    assert not mask.any() and not adv.any()


def test_spread_to_tokens_needs_an_int_length():
    with pytest.raises(ValueError, match="length must be an int"):
        spread_to_tokens([1.0], [(0, 2)], length=4.0)


@pytest.mark.parametrize("advantages, spans, message", [
    ([1.0, 2.0], [(0, 3), (2, 5)], "overlap"),
    ([1.0], [(3, 2)], "0 <= start <= end <= length"),
    ([1.0], [(0, 11)], "0 <= start <= end <= length"),
    ([1.0, 2.0], [(0, 3)], "2 turn advantages but 1 token spans"),
    ([1.0], [(0,)], "pair of ints"),
    ([1.0], [(0.5, 3)], "pair of ints"),
    ([math.nan], [(0, 3)], "turn_advantages must be finite"),
])
def test_spread_rejects_bad_spans(advantages, spans, message):
    with pytest.raises(ValueError, match=message):
        spread_to_tokens(advantages, spans, length=10)


# -- GAE ----------------------------------------------------------------------------------------
def test_gae_by_hand():
    # γ = 0.9, λ = 0.8 (γλ = 0.72), V_3 = 0:
    # δ2 = 1 + 0 - 0.7 = 0.3                 A2 = 0.3
    # δ1 = 0 + 0.9·0.7 - 0.6 = 0.03          A1 = 0.03 + 0.72·0.3 = 0.246
    # δ0 = 0 + 0.9·0.6 - 0.5 = 0.04          A0 = 0.04 + 0.72·0.246 = 0.21712
    adv, ret = gae_advantages([0.0, 0.0, 1.0], [0.5, 0.6, 0.7], gamma=0.9, lam=0.8)
    np.testing.assert_allclose(adv, [0.21712, 0.246, 0.3], atol=1e-12)
    np.testing.assert_allclose(ret, [0.71712, 0.846, 1.0], atol=1e-12)   # A + V
    # bootstrap V_3 = 0.5: δ2 = 1 + 0.45 - 0.7 = 0.75; A1 = 0.03 + 0.72·0.75 = 0.57;
    # A0 = 0.04 + 0.72·0.57 = 0.4504
    adv, _ = gae_advantages([0.0, 0.0, 1.0], [0.5, 0.6, 0.7, 0.5], gamma=0.9, lam=0.8)
    np.testing.assert_allclose(adv, [0.4504, 0.57, 0.75], atol=1e-12)
    # γ = λ = 1: Monte-Carlo return minus the value
    adv, _ = gae_advantages([0.0, 0.0, 1.0], [0.5, 0.6, 0.7], gamma=1.0, lam=1.0)
    np.testing.assert_allclose(adv, [0.5, 0.4, 0.3], atol=1e-12)
    # λ = 0: one-step TD errors
    adv, _ = gae_advantages([0.0, 0.0, 1.0], [0.5, 0.6, 0.7], gamma=0.9, lam=0.0)
    np.testing.assert_allclose(adv, [0.04, 0.03, 0.3], atol=1e-12)


def test_gae_batched_equals_rows():
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(4, 7)), rng.normal(size=(4, 8))
    adv, ret = gae_advantages(rewards, values, 0.99, 0.95)
    for i in range(4):
        a, r = gae_advantages(rewards[i], values[i], 0.99, 0.95)
        np.testing.assert_allclose(adv[i], a, atol=1e-12)
        np.testing.assert_allclose(ret[i], r, atol=1e-12)


def test_gae_rejects_bad_input():
    with pytest.raises(ValueError, match="rewards must be finite"):
        gae_advantages([0.0, math.nan], [0.0, 0.0], 0.9, 0.9)
    with pytest.raises(ValueError, match="values must have shape"):
        gae_advantages([0.0, 1.0], [0.0], 0.9, 0.9)
    with pytest.raises(ValueError, match="gamma"):
        gae_advantages([0.0, 1.0], [0.0, 0.0], 1.5, 0.9)


def test_numpy_modules_do_not_import_torch():
    code = ("import sys, cmpo.advantage, cmpo.lagrangian; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
