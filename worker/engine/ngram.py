"""Prompt-lookup proposals: continue the sequence the way it continued after the same n-gram before.

Code and documents repeat themselves (identifiers, boilerplate, quoted context), so the text that
followed the latest earlier occurrence of the current suffix is a free, often long, guess.
"""

from __future__ import annotations


class NgramIndex:
    """Latest position after each n-gram (``min_n..max_n``), updated in O(1) per appended token."""

    def __init__(self, max_n: int = 3, min_n: int = 1):
        self.max_n = max_n
        self.min_n = min_n
        self.tokens: list[int] = []
        self._after: dict[tuple[int, ...], int] = {}
        self._pending: dict[tuple[int, ...], int] = {}

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            self.tokens.append(token)
            end = len(self.tokens)
            # an n-gram ending at the last token has no continuation yet: publish the ones that do now
            self._after.update(self._pending)
            self._pending = {
                tuple(self.tokens[end - n : end]): end for n in range(self.min_n, self.max_n + 1) if end >= n
            }

    def propose(self, count: int) -> list[int]:
        """Up to ``count`` tokens that followed the longest suffix n-gram seen earlier (or nothing)."""
        end = len(self.tokens)
        for n in range(self.max_n, self.min_n - 1, -1):
            if end < n:
                continue
            start = self._after.get(tuple(self.tokens[end - n : end]))
            if start is not None:
                return self.tokens[start : start + count]
        return []
