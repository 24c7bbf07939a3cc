"""Cost controllers (cmpo.lagrangian): PID-Lagrangian and the ablation variants, step by step."""

from __future__ import annotations

import json
import math

import pytest

from cmpo.lagrangian import (
    FixedPenalty,
    GradientLagrangian,
    NoPenalty,
    PIDLagrangian,
    make_cost_controller,
)


def approx(x):
    return pytest.approx(x, abs=1e-12)


# -- PID -----------------------------------------------------------------------------------------
def test_pid_sequence_by_hand():
    pid = PIDLagrangian(kp=1.0, ki=0.1, kd=0.5, cost_limit=0.3)
    assert pid.lam == 0.0
    # k=1: J=0.5, e=0.2; I=0+0.1*0.2=0.02; P=0.2; S=0.5, D=max(0,0.5-0)=0.5
    #      λ = 1*0.2 + 0.02 + 0.5*0.5 = 0.47
    assert pid.update(0.5) == approx(0.47)
    assert pid.terms == {"p": approx(0.2), "i": approx(0.02), "d": approx(0.25)}
    # k=2: J=0.6, e=0.3; I=0.02+0.03=0.05; P=0.3; D=0.6-0.5=0.1 -> λ = 0.3+0.05+0.05 = 0.40
    assert pid.update(0.6) == approx(0.40)
    # k=3: J=0.2, e=-0.1; I=0.05-0.01=0.04; P=-0.1; D=max(0,0.2-0.6)=0
    #      λ = clip(-0.1+0.04+0, 0, ∞) = 0
    assert pid.update(0.2) == approx(0.0)
    assert pid.integral == approx(0.04)
    # k=4: J=0.3, e=0; I=0.04; P=0; D=max(0,0.3-0.2)=0.1 -> λ = 0 + 0.04 + 0.5*0.1 = 0.09
    assert pid.update(0.3) == approx(0.09)
    assert pid.lam == approx(0.09) and pid.num_updates == 4


def test_pid_integral_is_clamped_at_zero():
    pid = PIDLagrangian(kp=0.0, ki=0.5, kd=0.0, cost_limit=0.5, lambda_init=0.1)
    assert pid.lam == approx(0.1) and pid.integral == approx(0.1)   # I starts at lambda_init
    # J=0.2: e=-0.3; I = max(0, 0.1 + 0.5*(-0.3)) = max(0, -0.05) = 0
    assert pid.update(0.2) == approx(0.0)
    assert pid.integral == 0.0
    # J=0.7: e=0.2; I = 0 + 0.1 = 0.1 (an unclamped integral would give -0.05 + 0.1 = 0.05)
    assert pid.update(0.7) == approx(0.1)


def test_pid_lambda_is_clipped_to_lambda_max_and_zero():
    pid = PIDLagrangian(kp=10.0, ki=0.0, kd=0.0, cost_limit=0.3, lambda_max=1.0)
    assert pid.update(0.5) == approx(1.0)     # 10*0.2 = 2 -> clipped to 1
    assert pid.update(0.35) == approx(0.5)    # 10*0.05 = 0.5
    assert pid.update(0.1) == approx(0.0)     # 10*(-0.2) = -2 -> clipped to 0


def test_pid_proportional_ema():
    pid = PIDLagrangian(kp=1.0, ki=0.0, kd=0.0, cost_limit=0.3, ema_alpha_p=0.5)
    assert pid.update(0.5) == approx(0.1)     # P = 0.5*0 + 0.5*0.2 = 0.1
    assert pid.update(0.7) == approx(0.25)    # P = 0.5*0.1 + 0.5*0.4 = 0.25
    assert pid.update(0.3) == approx(0.125)   # P = 0.5*0.25 + 0.5*0 = 0.125 (unsmoothed: 0)


def test_pid_derivative_ema_and_delay():
    # D_k = max(0, S_k - S_{k-2}), S = EMA_0.5(J) from S_0 = 0, S_j = 0 for j <= 0
    pid = PIDLagrangian(kp=0.0, ki=0.0, kd=1.0, cost_limit=0.0, ema_alpha_d=0.5, d_delay=2)
    expected = [
        (0.4, 0.2),    # S1 = 0.5*0 + 0.5*0.4 = 0.2;      D = 0.2 - S_{-1}(0) = 0.2
        (0.8, 0.5),    # S2 = 0.5*0.2 + 0.5*0.8 = 0.5;    D = 0.5 - S_0(0)   = 0.5
        (0.8, 0.45),   # S3 = 0.25 + 0.4 = 0.65;          D = 0.65 - S1(0.2) = 0.45
        (0.2, 0.0),    # S4 = 0.325 + 0.1 = 0.425;        D = max(0, 0.425 - S2(0.5)) = 0
        (0.2, 0.0),    # S5 = 0.2125 + 0.1 = 0.3125;      D = max(0, 0.3125 - S3(0.65)) = 0
    ]
    for cost, lam in expected:
        assert pid.update(cost) == approx(lam)
    assert pid.d_history == [approx(0.425), approx(0.3125)]
    # With d_delay=1, step 3 would be S3 - S2 = 0.15 instead of 0.45.
    one = PIDLagrangian(kp=0.0, ki=0.0, kd=1.0, cost_limit=0.0, ema_alpha_d=0.5, d_delay=1)
    assert [one.update(c) for c, _ in expected[:3]] == [approx(0.2), approx(0.3), approx(0.15)]


def test_pid_lambda_init_is_the_starting_lambda_and_integral():
    pid = PIDLagrangian(kp=0.0, ki=0.1, kd=0.0, cost_limit=0.3, lambda_init=0.5)
    assert pid.lam == 0.5
    assert pid.update(0.5) == approx(0.52)    # I = 0.5 + 0.1*0.2


# -- the ablation variants -------------------------------------------------------------------------
def test_none_and_fixed_ignore_the_cost():
    none = make_cost_controller("none", cost_limit=0.3)
    fixed = make_cost_controller("fixed", lam=0.7, cost_limit=0.3)
    assert isinstance(none, NoPenalty) and isinstance(fixed, FixedPenalty)
    assert none.lam == 0.0 and fixed.lam == 0.7
    for cost in (0.0, 0.9, 5.0):
        assert none.update(cost) == 0.0
        assert fixed.update(cost) == 0.7
    assert fixed.num_updates == 3


def test_lagrangian_plain_error_update():
    lag = make_cost_controller("lagrangian", lr=0.5, cost_limit=0.3, lambda_init=0.1)
    assert isinstance(lag, GradientLagrangian) and lag.lam == 0.1
    assert lag.update(0.5) == approx(0.2)     # 0.1 + 0.5*(0.5-0.3)
    assert lag.update(0.1) == approx(0.1)     # 0.2 + 0.5*(-0.2)
    assert lag.update(0.0) == approx(0.0)     # max(0, 0.1 + 0.5*(-0.3)) = max(0, -0.05)


def test_lagrangian_relative_error_and_lambda_max():
    lag = make_cost_controller("lagrangian", lr=0.1, cost_limit=0.2, relative=True, lambda_max=0.15)
    assert lag.update(0.3) == approx(0.05)    # e = (0.3-0.2)/0.2 = 0.5 -> 0 + 0.1*0.5
    assert lag.update(0.5) == approx(0.15)    # e = 1.5 -> 0.05 + 0.15 = 0.2 -> clipped to 0.15
    with pytest.raises(ValueError, match="cost_limit"):
        make_cost_controller("lagrangian", lr=0.1, cost_limit=0.0, relative=True)


# -- checkpoints -----------------------------------------------------------------------------------
CONTROLLERS = {
    "none": dict(cost_limit=0.3),
    "fixed": dict(lam=0.4, cost_limit=0.3),
    "lagrangian": dict(lr=0.3, cost_limit=0.3, relative=True, lambda_max=5.0),
    "pid": dict(kp=1.5, ki=0.2, kd=2.0, cost_limit=0.3, lambda_init=0.1, lambda_max=3.0,
                ema_alpha_p=0.3, ema_alpha_d=0.6, d_delay=3),
}
COSTS = [0.1, 0.5, 0.9, 0.45, 0.2, 0.05, 0.6, 0.33, 0.31, 0.8]


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_state_dict_round_trip_continues_identically(name):
    original = make_cost_controller(name, **CONTROLLERS[name])
    for cost in COSTS[:5]:
        original.update(cost)
    saved = json.loads(json.dumps(original.state_dict()))     # plain JSON types only
    resumed = make_cost_controller(name, **CONTROLLERS[name])
    resumed.load_state_dict(saved)
    assert resumed.lam == original.lam
    assert [resumed.update(c) for c in COSTS[5:]] == [original.update(c) for c in COSTS[5:]]
    assert resumed.state_dict() == original.state_dict()


def test_load_state_dict_checks_kind_and_configuration():
    pid = make_cost_controller("pid", **CONTROLLERS["pid"])
    pid.update(0.5)
    state = pid.state_dict()
    with pytest.raises(ValueError, match="'pid' controller"):
        make_cost_controller("lagrangian", lr=0.1, cost_limit=0.3).load_state_dict(state)
    other = make_cost_controller("pid", **{**CONTROLLERS["pid"], "kp": 9.0})
    with pytest.raises(ValueError, match="kp: saved 1.5 vs 9.0"):
        other.load_state_dict(state)
    other.load_state_dict(state, strict=False)            # keeps kp=9, takes the state
    assert other.kp == 9.0 and other.integral == pid.integral and other.lam == pid.lam
    with pytest.raises(ValueError, match="d_history"):
        shorter = make_cost_controller("pid", **{**CONTROLLERS["pid"], "d_delay": 1})
        state2 = pid.state_dict()
        state2["state"]["d_history"] = [0.1, 0.2]
        shorter.load_state_dict(state2, strict=False)
    with pytest.raises(ValueError, match="state_dict"):
        pid.load_state_dict({"lam": 1.0})


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CONTROLLERS))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "high"])
def test_non_finite_cost_is_rejected(name, bad):
    controller = make_cost_controller(name, **CONTROLLERS[name])
    with pytest.raises(ValueError, match="mean_cost"):
        controller.update(bad)
    assert controller.num_updates == 0


@pytest.mark.parametrize("kwargs, word", [
    (dict(kp=math.nan), "kp"), (dict(ki=-1.0), "ki"), (dict(kd=math.inf), "kd"),
    (dict(cost_limit=math.nan), "cost_limit"), (dict(lambda_init=-0.1), "lambda_init"),
    (dict(lambda_max=-1.0), "lambda_max"), (dict(lambda_max=math.nan), "lambda_max"),
    (dict(ema_alpha_p=1.0), "ema_alpha_p"), (dict(ema_alpha_d=-0.1), "ema_alpha_d"),
    (dict(d_delay=0), "d_delay"), (dict(d_delay=1.5), "d_delay"),
    (dict(lambda_init=2.0, lambda_max=1.0), "lambda_init"),
])
def test_pid_rejects_bad_settings(kwargs, word):
    settings = {"kp": 1.0, "ki": 0.1, "kd": 0.0, "cost_limit": 0.3, **kwargs}
    with pytest.raises(ValueError, match=word):
        PIDLagrangian(**settings)


def test_lambda_max_none_or_inf_means_unbounded():
    assert PIDLagrangian(1, 0, 0, 0.0, lambda_max=math.inf).update(100.0) == 100.0
    assert PIDLagrangian(1, 0, 0, 0.0).update(100.0) == 100.0


def test_make_cost_controller_errors():
    with pytest.raises(ValueError, match="unknown cost controller 'pi'"):
        make_cost_controller("pi")
    with pytest.raises(TypeError, match="'pid'"):
        make_cost_controller("pid", kp=1.0)             # missing ki, kd, cost_limit
    with pytest.raises(ValueError, match="lam"):
        make_cost_controller("fixed", lam=-1.0)
