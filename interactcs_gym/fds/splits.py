"""Difficulty mixes and user splits of FDS (SPEC 4.2).

A *user* of a split is one (persona, order) pair: the same persona with another order is another
user. ``data/splits.json`` lists, per difficulty (``hard``, ``easy``), the ``test`` users (exactly
:data:`TEST_USERS` = 80, as the paper evaluates 80 users x 3 seeds) and the ``train`` users
(:data:`TRAIN_USERS` each) as ``[persona_id, order_id]`` pairs.

Difficulty is the mix of cooperation levels 1..5 (exact weights, :data:`DIFFICULTY_WEIGHTS`):

| difficulty | level 1 | level 2 | level 3 | level 4 | level 5 |
|---|---|---|---|---|---|
| hard | 0.35 | 0.30 | 0.20 | 0.10 | 0.05 |
| easy | 0.05 | 0.10 | 0.20 | 0.30 | 0.35 |

so the 80 test users hold exactly 28/24/16/8/4 (hard) and 4/8/16/24/28 (easy) personas of levels
1..5, and the train users 700/600/400/200/100 and 100/200/400/600/700. Test personas and test orders
appear in no train user (of either difficulty), and the hard and easy test sets share none either:
a test score measures generalisation to unseen users and orders. :func:`load_split` checks all
of this on load.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from interactcs_gym.fds.datafiles import DataFileError, read_data
from interactcs_gym.fds.personas import Persona, personas_by_id
from interactcs_gym.fds.scenarios import Order, orders_by_id

SPLITS_FILE = "splits.json"
DIFFICULTIES = ("hard", "easy")
SPLITS = ("test", "train")
TEST_USERS = 80
TRAIN_USERS = 2000
DIFFICULTY_WEIGHTS: dict[str, tuple[float, ...]] = {
    "hard": (0.35, 0.30, 0.20, 0.10, 0.05),
    "easy": (0.05, 0.10, 0.20, 0.30, 0.35),
}


def level_counts(difficulty: str, n: int) -> tuple[int, ...]:
    """Users per cooperation level 1..5 in a split of ``n`` users: ``round(w_l * n)``.

    >>> level_counts("hard", 80)
    (28, 24, 16, 8, 4)
    """
    counts = tuple(round(w * n) for w in DIFFICULTY_WEIGHTS[difficulty])
    if sum(counts) != n:
        raise ValueError(f"{n} users cannot follow the {difficulty} weights exactly")
    return counts


@dataclass(frozen=True)
class UserCase:
    """One user of a split: ``split[index]`` is (``persona``, ``order``), named ``user_id``."""

    user_id: str
    index: int
    persona: Persona
    order: Order


def _check_difficulty(difficulty: str, split: str) -> None:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


@functools.lru_cache(maxsize=1)
def _raw_splits() -> dict[str, dict[str, list[tuple[str, str]]]]:
    data, label = read_data(None, SPLITS_FILE)
    personas, orders = personas_by_id(), orders_by_id()
    if not isinstance(data, dict) or set(data) != set(DIFFICULTIES):
        raise DataFileError(f"{label}: expected the keys {list(DIFFICULTIES)} at the top level")
    out: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for diff in DIFFICULTIES:
        if not isinstance(data[diff], dict) or set(data[diff]) != set(SPLITS):
            raise DataFileError(f"{label}: {diff}: expected the keys {list(SPLITS)}")
        out[diff] = {}
        for split in SPLITS:
            pairs = data[diff][split]
            where = f"{label}: {diff}.{split}"
            want_n = TEST_USERS if split == "test" else TRAIN_USERS
            if not isinstance(pairs, list) or len(pairs) != want_n:
                raise DataFileError(f"{where}: expected a list of {want_n} [persona_id, order_id] pairs")
            for i, pair in enumerate(pairs):
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise DataFileError(f"{where}[{i}]: expected [persona_id, order_id], got {pair!r}")
                if pair[0] not in personas:
                    raise DataFileError(f"{where}[{i}]: unknown persona_id {pair[0]!r}")
                if pair[1] not in orders:
                    raise DataFileError(f"{where}[{i}]: unknown order_id {pair[1]!r}")
            if len({tuple(p) for p in pairs}) != len(pairs):
                raise DataFileError(f"{where}: duplicate users")
            levels = [personas[p].cooperation_level for p, _ in pairs]
            got = tuple(levels.count(lv) for lv in range(1, 6))
            if got != level_counts(diff, want_n):
                raise DataFileError(f"{where}: users per cooperation level {got} do not follow the "
                                    f"{diff} weights {DIFFICULTY_WEIGHTS[diff]} "
                                    f"(want {level_counts(diff, want_n)})")
            out[diff][split] = [(p, o) for p, o in pairs]
    train_p = {p for d in DIFFICULTIES for p, _ in out[d]["train"]}
    train_o = {o for d in DIFFICULTIES for _, o in out[d]["train"]}
    test_sets = {d: ({p for p, _ in out[d]["test"]}, {o for _, o in out[d]["test"]}) for d in DIFFICULTIES}
    for d, (tp, to) in test_sets.items():
        if tp & train_p or to & train_o:
            raise DataFileError(f"{label}: {d}.test shares personas or orders with a train split")
    if test_sets["hard"][0] & test_sets["easy"][0] or test_sets["hard"][1] & test_sets["easy"][1]:
        raise DataFileError(f"{label}: hard.test and easy.test share personas or orders")
    return out


@functools.lru_cache(maxsize=4)
def load_split(difficulty: str, split: str) -> tuple[UserCase, ...]:
    """The users of one split, in file order; ``user_id`` is ``"<difficulty>-<split>-<index>"``."""
    _check_difficulty(difficulty, split)
    personas, orders = personas_by_id(), orders_by_id()
    return tuple(UserCase(user_id=f"{difficulty}-{split}-{i:04d}", index=i,
                          persona=personas[p], order=orders[o])
                 for i, (p, o) in enumerate(_raw_splits()[difficulty][split]))
