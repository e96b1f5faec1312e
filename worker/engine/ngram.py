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


class UnverifiedLookup:
    """A lookup a step did not verify, scored on the tokens the sequence went on to commit.

    The controller rates the lookup only on steps that verify it, so once a stretch of misses (or
    costs measured under load) switched it off, nothing switched it back on: a fresh appliance served
    code at 92 tok/s, then at 39 with the lookup verified in none of 95 steps. Scoring the unverified
    guess costs no rows, and is the verified rate's own sample: greedy verification accepts exactly
    the tokens target-only decoding commits, and a sampled point-mass token is accepted with the
    target's probability, the chance the committed token is that one."""

    def __init__(self, start: int, guess: list[int]):
        self.start = start  # the sequence's index of the guess's first token
        self.guess = guess

    def accepted_run(self, tokens: list[int]) -> int | None:
        """How many of the guess's tokens verification would have accepted, once ``tokens`` (the
        sequence so far) decide it; None while they do not."""
        committed = tokens[self.start : self.start + len(self.guess)]  # shorter while undecided
        for run, (guessed, got) in enumerate(zip(self.guess, committed, strict=False)):
            if guessed != got:
                return run
        return len(self.guess) if len(committed) == len(self.guess) else None
