"""Advantage estimators for multi-turn rollouts (SPEC 8.2 and 8.4; paper Eq. 5).

A *group* is G rollouts of the same episode key. Rollout i has agent turns t = 1..T_i with
outcome R_i (the env's terminal reward), process rewards p_{i,t} (the judge) and costs c_{i,t}
(``info["cost"]``); C_i = Σ_t c_{i,t}. Every estimator takes one group and returns G arrays of
per-turn advantages (rollout i's array has length T_i; a rollout without turns gets an empty one)::

    advantages = get_estimator("cmpo")(outcomes, process, costs, lam, **options)

with ``outcomes`` G floats, ``process`` and ``costs`` G sequences of per-turn floats and ``lam``
the Lagrange multiplier λ_k of the cost controller (``cmpo.lagrangian``). Estimators:

* ``"cmpo"``: the hybrid advantage, :func:`hybrid_advantages`.
* ``"grpo"``: session outcome only, one advantage per rollout, :func:`grpo_advantages`.
* ``"capo"``: turn-level generative credit, outcome-dominant, :func:`capo_advantages`.

All three end with the same cost term, A = ũ − λ·ĉ (optionally /(1 + λ)), so any estimator can be
run with or without the cost constraint: ``use_cost=False`` (or the ``"none"`` controller, λ = 0)
is the "w/o Cost" ablation; ``w_p=0`` is "w/o process reward" and ``w_o=0`` "w/o outcome".
The token-level ``ppo`` baseline needs a value head, so it is not a group estimator: the trainer
uses :func:`gae_advantages` for it. :func:`spread_to_tokens` puts per-turn advantages on tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np

from cmpo._validate import finite_array, finite_float, finite_ragged

__all__ = [
    "hybrid_advantages",
    "grpo_advantages",
    "capo_advantages",
    "ESTIMATORS",
    "get_estimator",
    "estimator_options",
    "spread_to_tokens",
    "gae_advantages",
]

COST_SIGNALS = ("turn", "session")


# -- shared pieces -------------------------------------------------------------------------------
class _Group:
    """A validated group, flattened turn-major; ``turn_rollout[j]`` is the rollout of turn j."""

    def __init__(self, outcomes, process, costs):
        self.outcomes = finite_array("outcomes", outcomes, ndim=1)
        p_rows = finite_ragged("process", process)
        c_rows = finite_ragged("costs", costs)
        size = len(self.outcomes)
        if size == 0:
            raise ValueError("a group needs at least one rollout, got outcomes of length 0")
        if not size == len(p_rows) == len(c_rows):
            raise ValueError(f"outcomes, process and costs must have one entry per rollout, got "
                             f"lengths {size}, {len(p_rows)} and {len(c_rows)}")
        for i, (p_i, c_i) in enumerate(zip(p_rows, c_rows)):
            if len(p_i) != len(c_i):
                raise ValueError(f"rollout {i}: process has {len(p_i)} turns but costs has "
                                 f"{len(c_i)}")
        self.lengths = np.array([len(row) for row in p_rows], dtype=np.int64)
        self.turn_rollout = np.repeat(np.arange(size), self.lengths)
        self.process = np.concatenate(p_rows)
        self.costs = np.concatenate(c_rows)
        if (self.costs < 0).any():
            j = int(np.argmax(self.costs < 0))
            i = int(self.turn_rollout[j])
            raise ValueError(f"costs must be >= 0 (SPEC 8.1), got {self.costs[j]} at "
                             f"costs[{i}][{j - int(self.lengths[:i].sum())}]")

    def session_costs(self) -> np.ndarray:
        """C_i = Σ_t c_{i,t}, one per rollout."""
        return np.bincount(self.turn_rollout, weights=self.costs, minlength=len(self.outcomes))

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Per-turn values (flat, turn-major) back to G arrays of lengths T_i."""
        return np.split(flat, np.cumsum(self.lengths)[:-1])


def _check_lam(lam) -> float:
    lam = finite_float("lam", lam)
    if lam < 0:
        raise ValueError(f"lam must be >= 0 (a Lagrange multiplier), got {lam}")
    return lam


def _check_eps(eps) -> float:
    eps = finite_float("eps", eps)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return eps


def _normalise(values: np.ndarray, eps: float) -> np.ndarray:
    """(x − mean(x)) / (std(x) + eps) with the population std (ddof=0); all-equal x gives zeros."""
    if values.size == 0 or np.ptp(values) == 0.0:
        return np.zeros_like(values)
    return (values - values.mean()) / (values.std() + eps)


def _with_cost(group: _Group, tilde: np.ndarray, lam: float, cost_signal: str, sum_norm: bool,
               use_cost: bool) -> list[np.ndarray]:
    """A_{i,t} = ũ_{i,t} − λ·ĉ_{i,t}, ĉ = c_{i,t} ("turn") or C_i ("session"); sum_norm: /(1+λ)."""
    if cost_signal not in COST_SIGNALS:
        raise ValueError(f"cost_signal must be one of {COST_SIGNALS}, got {cost_signal!r}")
    lam = _check_lam(lam)
    if not use_cost:
        lam = 0.0               # "w/o Cost": λ is still checked, then left out
    c_hat = group.costs if cost_signal == "turn" else group.session_costs()[group.turn_rollout]
    adv = tilde - lam * c_hat
    return group.split(adv / (1.0 + lam) if sum_norm else adv)


# -- estimators ----------------------------------------------------------------------------------
def hybrid_advantages(outcomes: Sequence[float], process: Sequence[Sequence[float]],
                      costs: Sequence[Sequence[float]], lam: float, w_o: float = 1.0,
                      w_p: float = 1.0, cost_signal: str = "turn", sum_norm: bool = False,
                      eps: float = 1e-6, use_cost: bool = True) -> list[np.ndarray]:
    """CMPO's hybrid advantage of one group (SPEC 8.2, paper Eq. 5)::

        u_{i,t} = w_o·R_i + w_p·p_{i,t}
        ũ_{i,t} = (u_{i,t} − mean(U)) / (std(U) + eps)      U = all u_{i,t} of the group,
                                                            std the population std (ddof = 0)
        A_{i,t} = ũ_{i,t} − λ·ĉ_{i,t}                       sum_norm: divided by (1 + λ)

    with ĉ_{i,t} = c_{i,t} for ``cost_signal="turn"`` (the penalty lands on the costly turn) or
    ĉ_{i,t} = C_i = Σ_t c_{i,t} for ``"session"`` (every turn of a costly session pays).
    Ablations: ``w_p=0`` (no process reward), ``w_o=0`` (no outcome), ``use_cost=False`` (λ taken
    as 0). A group whose utilities are all equal gives ũ = 0. A rollout without turns gets an empty
    array and adds nothing to U. Returns G float64 arrays of lengths T_i.
    """
    group = _Group(outcomes, process, costs)
    w_o, w_p = finite_float("w_o", w_o), finite_float("w_p", w_p)
    utility = w_o * group.outcomes[group.turn_rollout] + w_p * group.process
    tilde = _normalise(utility, _check_eps(eps))
    return _with_cost(group, tilde, lam, cost_signal, sum_norm, use_cost)


def grpo_advantages(outcomes: Sequence[float], process: Sequence[Sequence[float]],
                    costs: Sequence[Sequence[float]], lam: float, sum_norm: bool = False,
                    eps: float = 1e-6, use_cost: bool = True) -> list[np.ndarray]:
    """GRPO (Shao et al. 2024): session outcome only, one advantage per rollout::

        Ã_i = (R_i − mean(R)) / (std(R) + eps)              over the G rollouts, population std
        A_{i,t} = Ã_i − λ·C_i   for every turn t of rollout i (sum_norm: divided by 1 + λ)

    ``process`` is only checked (lengths, finiteness): GRPO ignores the judge. The cost signal is
    the session cost C_i, so the advantage stays one value per rollout. Unlike the turn-level
    estimators, a rollout without turns still counts in mean(R) and std(R) (it is a sample of the
    outcome); it gets an empty array. All-equal outcomes give Ã = 0.
    """
    group = _Group(outcomes, process, costs)
    scores = _normalise(group.outcomes, _check_eps(eps))
    return _with_cost(group, scores[group.turn_rollout], lam, "session", sum_norm, use_cost)


def capo_advantages(outcomes: Sequence[float], process: Sequence[Sequence[float]],
                    costs: Sequence[Sequence[float]], lam: float, w_o: float = 2.0,
                    w_p: float = 1.0, flag_threshold: float = 0.5, cost_signal: str = "turn",
                    sum_norm: bool = False, eps: float = 1e-6,
                    use_cost: bool = True) -> list[np.ndarray]:
    """CAPO-style turn-level generative credit (after Xie et al. 2025, arXiv:2508.02298)::

        f_{i,t} = 1 if p_{i,t} < flag_threshold else 0      the judge flags turn t as bad
        r_{i,t} = w_o·R_i − w_p·f_{i,t}                     outcome-dominant: w_o = 2, w_p = 1
        ũ_{i,t} = (r_{i,t} − mean(r)) / (std(r) + eps)      over all turns of the group
        A_{i,t} = ũ_{i,t} − λ·ĉ_{i,t}                       (cost term as in hybrid_advantages)

    CAPO turns an LLM judge's step critiques into a penalty on the flagged steps only, on top of the
    outcome reward given to every step, with asymmetric weights (outcome 2, process 1) so that a
    successful rollout with a flagged step (2 − 1 = 1) still beats a failed clean one (0) for
    R ∈ {0, 1}. Here a "step" is an agent turn and a flag is a process reward below
    ``flag_threshold`` (the paper's scale: 0 violation, 0.5 partial, 1 full compliance). It differs
    from CMPO in using binary flags (not the graded p) and outcome-dominant default weights.
    """
    group = _Group(outcomes, process, costs)
    w_o, w_p = finite_float("w_o", w_o), finite_float("w_p", w_p)
    flags = (group.process < finite_float("flag_threshold", flag_threshold)).astype(np.float64)
    rewards = w_o * group.outcomes[group.turn_rollout] - w_p * flags
    tilde = _normalise(rewards, _check_eps(eps))
    return _with_cost(group, tilde, lam, cost_signal, sum_norm, use_cost)


Estimator = Callable[..., list[np.ndarray]]

ESTIMATORS: dict[str, Estimator] = {
    "cmpo": hybrid_advantages,
    "grpo": grpo_advantages,
    "capo": capo_advantages,
}


def get_estimator(name: str) -> Estimator:
    """The group estimator called ``name`` ("cmpo", "grpo", "capo").

    Calling convention: ``fn(outcomes, process, costs, lam, **options) -> list[np.ndarray]``
    (G per-turn advantage arrays); :func:`estimator_options` lists each one's options.
    """
    if name == "ppo":
        raise ValueError("'ppo' is token-level with a value head, not a group estimator: the "
                         "trainer computes its advantages with cmpo.advantage.gae_advantages")
    try:
        return ESTIMATORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown advantage estimator {name!r}; choose one of "
                         f"{sorted(ESTIMATORS)} (or 'ppo' in the trainer)") from None


def estimator_options(name: str) -> dict[str, object]:
    """The keyword options of estimator ``name`` with their defaults, e.g. to validate a config."""
    params = inspect.signature(get_estimator(name)).parameters
    return {k: v.default for k, v in list(params.items())[4:]}


# -- tokens --------------------------------------------------------------------------------------
def _is_int(x) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _check_spans(spans, n_turns: int, length: int, where: str) -> list[tuple[int, int]]:
    if len(spans) != n_turns:
        raise ValueError(f"{where}: {n_turns} turn advantages but {len(spans)} token spans")
    out = []
    for t, span in enumerate(spans):
        try:
            start, end = span
        except (TypeError, ValueError):
            start = end = None
        if not all(_is_int(x) for x in (start, end)):
            raise ValueError(f"{where}: span {t} must be a (start, end) pair of ints, got {span!r}")
        start, end = int(start), int(end)
        if not 0 <= start <= end <= length:
            raise ValueError(f"{where}: span {t} = ({start}, {end}) must satisfy "
                             f"0 <= start <= end <= length = {length}")
        out.append((start, end))
    ordered = sorted(out)
    for (s0, e0), (s1, e1) in zip(ordered, ordered[1:]):
        if s1 < e0:
            raise ValueError(f"{where}: token spans ({s0}, {e0}) and ({s1}, {e1}) overlap")
    return out


def spread_to_tokens(turn_advantages: Sequence[float], spans: Sequence[tuple[int, int]],
                     length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-token advantages and mask of one rollout's token sequence (SPEC 8.2, last line)::

        adv[j] = A_t and mask[j] = True   for start_t <= j < end_t (turn t's generated tokens)
        adv[j] = 0   and mask[j] = False  elsewhere (system/user/env tokens, padding)

    ``spans`` holds one half-open (start, end) per turn, non-overlapping, within [0, length].
    Returns (float32 array of shape (length,), bool array of shape (length,)).
    """
    adv = finite_array("turn_advantages", turn_advantages, ndim=1)
    if not _is_int(length) or length < 0:
        raise ValueError(f"length must be an int >= 0, got {length!r}")
    length = int(length)
    token_adv = np.zeros(length, dtype=np.float32)
    mask = np.zeros(length, dtype=bool)
    for a, (start, end) in zip(adv, _check_spans(spans, len(adv), length, "spread_to_tokens")):
        token_adv[start:end] = a
        mask[start:end] = True
    return token_adv, mask


# -- PPO ----------------------------------------------------------------------------------------
def gae_advantages(rewards, values, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al. 2016) for the token-level PPO baseline::

        δ_t = r_t + γ·V_{t+1} − V_t
        A_t = δ_t + γ·λ·A_{t+1}          (A_T = 0)
        returns_t = A_t + V_t            (the value head's regression target)

    ``rewards`` has shape (..., T); ``values`` (..., T) for a finished trajectory (V_T = 0) or
    (..., T + 1) whose last entry bootstraps a cut-off one. ``lam`` here is the GAE λ, not the
    Lagrange multiplier. Returns (advantages, returns), float64 arrays of the shape of ``rewards``.
    """
    r = finite_array("rewards", rewards)
    v = finite_array("values", values)
    gamma, lam = finite_float("gamma", gamma), finite_float("lam", lam)
    for name, x in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {x}")
    if r.ndim == 0:
        raise ValueError("rewards must have a time axis (shape (..., T))")
    steps = r.shape[-1]
    if v.shape == r.shape:
        v = np.concatenate([v, np.zeros(r.shape[:-1] + (1,))], axis=-1)
    elif v.shape != r.shape[:-1] + (steps + 1,):
        raise ValueError(f"values must have shape {r.shape} or {r.shape[:-1] + (steps + 1,)}, "
                         f"got {v.shape}")
    adv = np.zeros_like(r)
    running = np.zeros(r.shape[:-1])
    for t in reversed(range(steps)):
        delta = r[..., t] + gamma * v[..., t + 1] - v[..., t]
        running = delta + gamma * lam * running
        adv[..., t] = running
    return adv, adv + v[..., :steps]
