"""Text spaces for dialogue: any Unicode string up to a length bound.

``gymnasium.spaces.Text`` only admits characters of a fixed charset (alphanumeric by default), which
rejects real dialogue (punctuation, newlines, emoji, CJK). :class:`UnicodeText` accepts every ``str``
whose length lies in ``[min_length, max_length]`` and samples printable Unicode text.

Vector envs: the generic tuple batching of gymnasium serves ``SyncVectorEnv``; for
``AsyncVectorEnv`` with its default ``shared_memory=True`` the space implements gymnasium's
shared-memory protocol (``create_shared_memory`` / ``write_to_shared_memory`` /
``read_from_shared_memory``): each env gets ``max_length + 1`` int32 slots, the string's length
and then its code points, so ``gym.make_vec(id, n, vectorization_mode="async")`` works as is.
``AsyncVectorEnv`` reads the buffer once, at construction, and returns (a deep copy of) that
object after every step, as it does for a Box's array view; so the read returns
:class:`SharedTexts`, a live view that decodes the buffer when indexed and deep-copies to a plain
tuple of strings. (gymnasium's own ``Text`` returns a tuple there, frozen at construction.)
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.spaces import Space
from gymnasium.vector.utils import (create_shared_memory, read_from_shared_memory,
                                    write_to_shared_memory)

# Sampling alphabet: ASCII letters, digits, punctuation and whitespace plus a spread of non-ASCII
# code points (Latin-1, Greek, Cyrillic, CJK, emoji), so sampled actions exercise real Unicode.
_SAMPLE_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    " .,;:!?'\"-_()[]{}<>/\\@#$%^&*+=~`|\n\t"
    "éèàçñüöäßøåÉÑ¿¡"
    "αβγδλπΩ"
    "привет"
    "你好谢谢外卖订单退款"
    "😀🙏🍕🚴"
)


class UnicodeText(Space[str]):
    """Any ``str`` of ``min_length`` to ``max_length`` characters (both inclusive).

    >>> space = UnicodeText(max_length=8, seed=0)
    >>> "héllo 👋" in space
    True
    >>> "x" * 9 in space
    False
    """

    def __init__(self, max_length: int, *, min_length: int = 0,
                 seed: int | np.random.Generator | None = None) -> None:
        if not (0 <= min_length <= max_length):
            raise ValueError(f"need 0 <= min_length <= max_length, got {min_length}, {max_length}")
        self.min_length = int(min_length)
        self.max_length = int(max_length)
        super().__init__(dtype=str, seed=seed)

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """A random string of printable Unicode; short (at most 64 characters) to keep checks fast.

        ``mask``/``probability`` are not supported (there is no finite charset to mask).
        """
        if mask is not None or probability is not None:
            raise NotImplementedError("UnicodeText.sample does not support mask or probability")
        high = min(self.max_length, max(self.min_length, 64))
        length = int(self.np_random.integers(self.min_length, high + 1))
        idx = self.np_random.integers(0, len(_SAMPLE_ALPHABET), size=length)
        return "".join(_SAMPLE_ALPHABET[i] for i in idx)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, UnicodeText) and self.min_length == other.min_length
                and self.max_length == other.max_length)

    def to_jsonable(self, sample_n: Any) -> list[str]:
        return list(sample_n)

    def from_jsonable(self, sample_n: list[str]) -> list[str]:
        return list(sample_n)


# ---------------------------------------------------------------------- shared memory (async vector envs)
@create_shared_memory.register(UnicodeText)
def _create_unicode_shared_memory(space: UnicodeText, n: int = 1, ctx: Any = mp) -> Any:
    """``n`` rows of ``max_length + 1`` int32: the length, then the code points."""
    return ctx.Array(np.dtype(np.int32).char, n * (space.max_length + 1))


def _rows(space: UnicodeText, shared_memory: Any, n: int) -> np.ndarray:
    return np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape((n, space.max_length + 1))


@write_to_shared_memory.register(UnicodeText)
def _write_unicode_to_shared_memory(space: UnicodeText, index: int, value: str, shared_memory: Any) -> None:
    if not space.contains(value):
        raise ValueError(f"{space} cannot hold a {type(value).__name__} of length "
                         f"{len(value) if isinstance(value, str) else '?'}")
    row = np.frombuffer(shared_memory.get_obj(), dtype=np.int32)[
        index * (space.max_length + 1):(index + 1) * (space.max_length + 1)]
    row[0] = len(value)
    row[1:1 + len(value)] = np.frombuffer(value.encode("utf-32-le"), dtype=np.int32)


class SharedTexts(Sequence):
    """The strings of ``n`` envs in a shared buffer, decoded when read (a live view).

    ``copy.deepcopy`` and ``copy.copy`` give a plain tuple of the current strings."""

    def __init__(self, space: UnicodeText, shared_memory: Any, n: int) -> None:
        self._space, self._memory, self._n = space, shared_memory, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return tuple(self)[index]
        row = _rows(self._space, self._memory, self._n)[index]
        return row[1:1 + row[0]].tobytes().decode("utf-32-le")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (tuple, SharedTexts)) and tuple(self) == tuple(other)

    __hash__ = None  # mutable

    def __copy__(self) -> tuple[str, ...]:
        return tuple(self)

    def __deepcopy__(self, memo: dict) -> tuple[str, ...]:
        return tuple(self)

    def __repr__(self) -> str:
        return f"SharedTexts({tuple(self)!r})"


@read_from_shared_memory.register(UnicodeText)
def _read_unicode_from_shared_memory(space: UnicodeText, shared_memory: Any, n: int = 1) -> SharedTexts:
    return SharedTexts(space, shared_memory, n)
