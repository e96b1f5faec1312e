"""Incremental detokenization with OpenAI stop strings.

Text is released only when it can no longer become part of a stop string, and never ends in
half a multi-byte character, so the streamed deltas concatenate to exactly the final text.
"""

from __future__ import annotations

from collections.abc import Callable

REPLACEMENT_CHAR = "\ufffd"


class StopStringStream:
    def __init__(self, decode: Callable[[list[int]], str], stop: list[str]) -> None:
        """``decode`` turns token ids into text, special tokens left out."""
        self._decode = decode
        self._stop = [s for s in stop if s]
        self._holdback = max((len(s) for s in self._stop), default=1) - 1
        self._token_ids: list[int] = []
        self._emitted = 0  # characters of the decoded text already released
        self.stopped = False

    def _visible(self, text: str) -> tuple[str, bool]:
        """Text up to the earliest stop string, and whether one was found."""
        cuts = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        if cuts:
            return text[: min(cuts)], True
        return text, False

    def push(self, token_ids: list[int]) -> str:
        """Add tokens; return the newly releasable text (empty if none yet)."""
        if self.stopped:
            return ""
        self._token_ids.extend(token_ids)
        text = self._decode(self._token_ids)
        visible, self.stopped = self._visible(text)
        if not self.stopped:
            if visible.endswith(REPLACEMENT_CHAR):
                visible = visible.rstrip(REPLACEMENT_CHAR)
            visible = visible[: max(self._emitted, len(visible) - self._holdback)]
        delta = visible[self._emitted :]
        self._emitted += len(delta)
        return delta

    def flush(self) -> str:
        """At the end of generation: release what was held back for possible stop strings."""
        if self.stopped:
            return ""
        text = self._decode(self._token_ids)
        visible, self.stopped = self._visible(text)
        delta = visible[self._emitted :]
        self._emitted += len(delta)
        return delta
