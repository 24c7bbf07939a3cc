"""Text spaces for dialogue: any Unicode string up to a length bound.

``gymnasium.spaces.Text`` only admits characters of a fixed charset (alphanumeric by default), which
rejects real dialogue (punctuation, newlines, emoji, CJK). :class:`UnicodeText` accepts every ``str``
whose length lies in ``[min_length, max_length]`` and samples printable Unicode text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import Space

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

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, UnicodeText) and self.min_length == other.min_length
                and self.max_length == other.max_length)

    def to_jsonable(self, sample_n: Any) -> list[str]:
        return list(sample_n)

    def from_jsonable(self, sample_n: list[str]) -> list[str]:
        return list(sample_n)
