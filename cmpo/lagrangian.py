"""Cost controllers: the Lagrange multiplier λ of CMPO's cost penalty (SPEC 8.3, paper Eq. 8).

At every training step k the trainer measures J_C, the batch's mean session cost, calls
``controller.update(J_C)`` and uses the returned λ_k in the advantage (``cmpo.advantage``):
A = ũ − λ_k·ĉ. The constraint is E[C] ≤ d (``cost_limit``).

Four controllers, one interface (``update(mean_cost) -> float``, ``lam``, ``state_dict()``,
``load_state_dict()``), built by name with :func:`make_cost_controller`:

======================  ==============================================  =====================
name                    λ update                                        class
======================  ==============================================  =====================
``"none"``              λ = 0 (no cost term: the "w/o Cost" ablation)   :class:`NoPenalty`
``"fixed"``             λ constant                                      :class:`FixedPenalty`
``"lagrangian"``        λ ← max(0, λ + η·e), e = J − d (or (J − d)/d)   :class:`GradientLagrangian`
``"pid"``               PID-Lagrangian (Stooke, Achiam & Abbeel 2020)   :class:`PIDLagrangian`
======================  ==============================================  =====================

``state_dict()`` returns plain JSON-serialisable types (floats, ints, lists, a dict), so the
trainer can store it in checkpoints and resuming continues exactly.
"""

from __future__ import annotations

import math
from typing import Any

from cmpo._validate import finite_float

__all__ = [
    "CostController",
    "NoPenalty",
    "FixedPenalty",
    "GradientLagrangian",
    "PIDLagrangian",
    "COST_CONTROLLERS",
    "make_cost_controller",
]


class CostController:
    """Base of the cost controllers: holds λ and the cost limit d; subclasses define ``update``."""

    name: str = ""

    def __init__(self, cost_limit: float | None = None):
        self.cost_limit = None if cost_limit is None else finite_float("cost_limit", cost_limit)
        self.lambda_max: float | None = None
        self._lam = 0.0
        self.num_updates = 0

    def _clip(self, lam: float) -> float:
        """clip(λ, 0, lambda_max); no upper bound when lambda_max is None."""
        lam = max(0.0, lam)
        return lam if self.lambda_max is None else min(lam, self.lambda_max)

    @property
    def lam(self) -> float:
        """The current multiplier λ_k (before any update: the initial value)."""
        return self._lam

    def update(self, mean_cost: float) -> float:
        """Feed the batch's mean session cost J_C of step k; returns the new λ_k."""
        raise NotImplementedError

    # -- checkpointing -------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {"cost_limit": self.cost_limit}

    def _state(self) -> dict[str, Any]:
        return {"lam": self._lam, "num_updates": self.num_updates}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._lam = finite_float("state['lam']", state["lam"])
        self.num_updates = int(state["num_updates"])

    def state_dict(self) -> dict[str, Any]:
        """``{"name", "config", "state"}`` in plain JSON types: what a checkpoint must hold."""
        return {"name": self.name, "config": self._config(), "state": self._state()}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore a ``state_dict()``; ``update`` then continues exactly as the saved controller.

        With ``strict`` (default) the saved configuration (gains, limit, ...) must equal this
        controller's, otherwise ValueError lists the differences; ``strict=False`` keeps this
        controller's configuration and loads only the state.
        """
        if not isinstance(state_dict, dict) or not {"name", "config", "state"} <= state_dict.keys():
            raise ValueError("state_dict must be a dict with keys 'name', 'config' and 'state' "
                             "as returned by state_dict()")
        if state_dict["name"] != self.name:
            raise ValueError(f"state_dict is of a {state_dict['name']!r} controller, "
                             f"this is a {self.name!r} controller")
        if strict:
            mine, saved = self._config(), state_dict["config"]
            diff = sorted(k for k in mine.keys() | saved.keys() if mine.get(k) != saved.get(k))
            if diff:
                details = ", ".join(f"{k}: saved {saved.get(k)!r} vs {mine.get(k)!r}" for k in diff)
                raise ValueError(f"controller configuration differs from the saved one "
                                 f"({details}); "
                                 "pass strict=False to keep the current configuration")
        self._set_state(state_dict["state"])

    def __repr__(self) -> str:
        config = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({config}) [lam={self._lam:.6g}]"


class NoPenalty(CostController):
    """λ = 0 always: no cost term (the paper's "w/o Cost" ablation); ``cost_limit`` is recorded."""

    name = "none"

    def update(self, mean_cost: float) -> float:
        """λ_k = 0 (the cost is checked to be finite, then ignored)."""
        finite_float("mean_cost", mean_cost)
        self.num_updates += 1
        return self._lam


class FixedPenalty(CostController):
    """λ = ``lam`` constant (the paper's "w/o Dynamic (Fixed λ)" ablation)."""

    name = "fixed"

    def __init__(self, lam: float, cost_limit: float | None = None):
        super().__init__(cost_limit)
        self._lam = finite_float("lam", lam)
        if self._lam < 0:
            raise ValueError(f"lam must be >= 0, got {self._lam}")
        self._fixed = self._lam

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "lam": self._fixed}

    def update(self, mean_cost: float) -> float:
        """λ_k = lam (the cost is checked to be finite, then ignored)."""
        finite_float("mean_cost", mean_cost)
        self.num_updates += 1
        return self._lam


def _check_lambda_max(lambda_max) -> float | None:
    """None or +inf mean "no upper bound"; anything else must be a finite number >= 0."""
    if lambda_max is None or (isinstance(lambda_max, (int, float)) and lambda_max == math.inf):
        return None
    out = finite_float("lambda_max", lambda_max)
    if out < 0:
        raise ValueError(f"lambda_max must be >= 0 (or None for no bound), got {out}")
    return out


def _check_lambda_range(lambda_init, lambda_max) -> tuple[float, float | None]:
    """``(lambda_init, lambda_max)`` checked: 0 <= lambda_init <= lambda_max (None: no bound)."""
    lambda_init = finite_float("lambda_init", lambda_init)
    if lambda_init < 0:
        raise ValueError(f"lambda_init must be >= 0, got {lambda_init}")
    lambda_max = _check_lambda_max(lambda_max)
    if lambda_max is not None and lambda_init > lambda_max:
        raise ValueError(f"lambda_init ({lambda_init}) must be <= lambda_max ({lambda_max})")
    return lambda_init, lambda_max


class GradientLagrangian(CostController):
    """The plain Lagrangian (gradient ascent on the dual, "w/o PID Control"; pure integral control).

    e_k = J_k − d, or e_k = (J_k − d)/d with ``relative=True`` (the paper's "relative error"
    update);
    λ_k = clip(λ_{k−1} + lr·e_k, 0, lambda_max). Before the first update λ = ``lambda_init``.
    """

    name = "lagrangian"

    def __init__(self, lr: float, cost_limit: float, lambda_init: float = 0.0,
                 lambda_max: float | None = None, relative: bool = False):
        super().__init__(finite_float("cost_limit", cost_limit))
        self.lr = finite_float("lr", lr)
        if self.lr < 0:
            raise ValueError(f"lr must be >= 0, got {self.lr}")
        self.lambda_init, self.lambda_max = _check_lambda_range(lambda_init, lambda_max)
        self.relative = bool(relative)
        if self.relative and self.cost_limit <= 0:
            raise ValueError(f"relative=True divides by cost_limit, which must be > 0, "
                             f"got {self.cost_limit}")
        self._lam = self._clip(self.lambda_init)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "lr": self.lr, "lambda_init": self.lambda_init,
                "lambda_max": self.lambda_max, "relative": self.relative}

    def update(self, mean_cost: float) -> float:
        """λ_k = clip(λ_{k−1} + lr·e_k, 0, lambda_max), e_k = J_k − d (relative: (J_k − d)/d)."""
        error = finite_float("mean_cost", mean_cost) - self.cost_limit
        if self.relative:
            error /= self.cost_limit
        self._lam = self._clip(self._lam + self.lr * error)
        self.num_updates += 1
        return self._lam


class PIDLagrangian(CostController):
    """PID-Lagrangian multiplier (paper Eq. 8; Stooke, Achiam & Abbeel 2020, ICML).

    At update k with J_k = the batch's mean session cost and d = ``cost_limit``::

        e_k  = J_k − d
        I_k  = max(0, I_{k−1} + ki·e_k)                         I_0 = lambda_init
        P_k  = α_p·P_{k−1} + (1 − α_p)·e_k                      P_0 = 0      (α_p = ema_alpha_p)
        S_k  = α_d·S_{k−1} + (1 − α_d)·J_k                      S_0 = 0      (α_d = ema_alpha_d)
        D_k  = max(0, S_k − S_{k−δ})                            S_j = 0 for j ≤ 0 (δ = d_delay)
        λ_k  = clip(kp·P_k + I_k + kd·D_k, 0, lambda_max)        λ_0 = lambda_init

    α = 0 means no smoothing (P_k = e_k, S_k = J_k). The D term only reacts to a *rising* cost
    (Stooke et al.: it damps overshoot without slowing the recovery from a cost drop).

    Relation to the reference code (rlpyt ``CppoPID``, by Stooke; OmniSafe ``PIDLagrangian``):
    followed exactly, including I starting at ``lambda_init``, the EMAs starting at 0 and the delay
    buffer initialised with one 0 (so for the first δ updates S_{k−δ} = 0, and the first update
    sees D_1 = (1 − α_d)·J_1: a one-off derivative kick when kd > 0). Departures: (1) λ is also
    clipped above by ``lambda_max`` (rlpyt clips only at 0; OmniSafe clips at ``penalty_max``);
    (2) the reference's ``diff_norm`` mode (I and λ clipped to [0, 1]) is not offered, and its
    ``sum_norm`` mode (advantage scaled by 1/(1 + λ)) lives in ``cmpo.advantage`` (``sum_norm``);
    (3) the integral has no upper anti-windup clamp (as in the reference without ``diff_norm``):
    I may exceed ``lambda_max`` while λ itself is clipped.
    """

    name = "pid"

    def __init__(self, kp: float, ki: float, kd: float, cost_limit: float,
                 lambda_init: float = 0.0, lambda_max: float | None = None,
                 ema_alpha_p: float = 0.0, ema_alpha_d: float = 0.0, d_delay: int = 1):
        super().__init__(finite_float("cost_limit", cost_limit))
        self.kp = finite_float("kp", kp)
        self.ki = finite_float("ki", ki)
        self.kd = finite_float("kd", kd)
        for gain in ("kp", "ki", "kd"):
            if getattr(self, gain) < 0:
                raise ValueError(f"{gain} must be >= 0, got {getattr(self, gain)}")
        self.lambda_init, self.lambda_max = _check_lambda_range(lambda_init, lambda_max)
        self.ema_alpha_p = finite_float("ema_alpha_p", ema_alpha_p)
        self.ema_alpha_d = finite_float("ema_alpha_d", ema_alpha_d)
        for alpha in ("ema_alpha_p", "ema_alpha_d"):
            if not 0.0 <= getattr(self, alpha) < 1.0:
                raise ValueError(f"{alpha} must be in [0, 1), got {getattr(self, alpha)}")
        if isinstance(d_delay, bool) or not isinstance(d_delay, int) or d_delay < 1:
            raise ValueError(f"d_delay must be an integer >= 1, got {d_delay!r}")
        self.d_delay = d_delay
        self.integral = self.lambda_init           # I
        self.p_ema = 0.0                           # P (EMA of the error)
        self.d_ema = 0.0                           # S (EMA of the cost)
        self.d_history = [0.0]                     # S_{k−δ..k−1}, oldest first, at most δ long
        self.terms = {"p": 0.0, "i": self.integral, "d": 0.0}
        self._lam = self._clip(self.lambda_init)

    def update(self, mean_cost: float) -> float:
        """One PID step on J_k = ``mean_cost`` (formulas in the class docstring); returns λ_k."""
        cost = finite_float("mean_cost", mean_cost)
        error = cost - self.cost_limit
        self.integral = max(0.0, self.integral + self.ki * error)
        self.p_ema = self.ema_alpha_p * self.p_ema + (1.0 - self.ema_alpha_p) * error
        self.d_ema = self.ema_alpha_d * self.d_ema + (1.0 - self.ema_alpha_d) * cost
        derivative = max(0.0, self.d_ema - self.d_history[0])
        self._lam = self._clip(self.kp * self.p_ema + self.integral + self.kd * derivative)
        self.d_history = (self.d_history + [self.d_ema])[-self.d_delay:]
        self.terms = {"p": self.kp * self.p_ema, "i": self.integral, "d": self.kd * derivative}
        self.num_updates += 1
        return self._lam

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "kp": self.kp, "ki": self.ki, "kd": self.kd,
                "lambda_init": self.lambda_init, "lambda_max": self.lambda_max,
                "ema_alpha_p": self.ema_alpha_p, "ema_alpha_d": self.ema_alpha_d,
                "d_delay": self.d_delay}

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "integral": self.integral, "p_ema": self.p_ema,
                "d_ema": self.d_ema, "d_history": list(self.d_history), "terms": dict(self.terms)}

    def _set_state(self, state: dict[str, Any]) -> None:
        history = [finite_float(f"state['d_history'][{i}]", v)
                   for i, v in enumerate(state["d_history"])]
        if not 1 <= len(history) <= self.d_delay:
            raise ValueError(f"state['d_history'] must hold 1..d_delay={self.d_delay} values, "
                             f"got {len(history)}")
        super()._set_state(state)
        self.integral = finite_float("state['integral']", state["integral"])
        self.p_ema = finite_float("state['p_ema']", state["p_ema"])
        self.d_ema = finite_float("state['d_ema']", state["d_ema"])
        self.d_history = history
        self.terms = {k: finite_float(f"state['terms'][{k!r}]", v)
                      for k, v in state.get("terms", self.terms).items()}


COST_CONTROLLERS: dict[str, type[CostController]] = {
    "none": NoPenalty,
    "fixed": FixedPenalty,
    "lagrangian": GradientLagrangian,
    "pid": PIDLagrangian,
}


def make_cost_controller(name: str, **kwargs) -> CostController:
    """Build a cost controller by name: ``"none"``, ``"fixed"``, ``"lagrangian"`` or ``"pid"``.

    Keyword arguments go to the class (see the table in the module docstring)::

        make_cost_controller("none", cost_limit=0.3)
        make_cost_controller("fixed", lam=0.5, cost_limit=0.3)
        make_cost_controller("lagrangian", lr=0.05, cost_limit=0.3, relative=True)
        make_cost_controller("pid", kp=1.0, ki=0.1, kd=0.5, cost_limit=0.3)
    """
    try:
        cls = COST_CONTROLLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown cost controller {name!r}; choose one of "
                         f"{sorted(COST_CONTROLLERS)}") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise TypeError(f"cost controller {name!r}: {exc}") from None
