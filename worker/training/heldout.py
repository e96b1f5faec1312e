"""The held-out traces that help decide promotion: a stable share of traffic, never trained on.

Kept per domain (the newest ``max_per_domain`` of each); shadow evaluation reads the newest overall,
with no caller filling more than its share while others have traces to offer.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque

from borealis.wire import TraceRecord


def is_heldout(record: TraceRecord, fraction: float) -> bool:
    """A stable hash of the request id, so a redelivered trace lands on the same side."""
    bucket = int(hashlib.sha256(record.request_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


def newest_with_caller_cap(records: list[TraceRecord], count: int, share: float) -> list[TraceRecord]:
    """The newest ``count`` records, no caller holding more than ``share`` of them while others have
    records to offer (then the newest left over fill the rest): a burst from one API key cannot
    decide the held-out set alone. Oldest first, as shadow evaluation reads them."""
    newest = sorted(records, key=lambda r: r.finished_at, reverse=True)
    cap = max(1, int(share * count))
    taken: Counter[str] = Counter()
    chosen: list[TraceRecord] = []
    leftover: list[TraceRecord] = []
    for record in newest:
        if len(chosen) >= count:
            break
        if taken[record.caller] < cap:
            taken[record.caller] += 1
            chosen.append(record)
        else:
            leftover.append(record)
    chosen += leftover[: count - len(chosen)]
    return sorted(chosen, key=lambda r: r.finished_at)


class HeldOut:
    def __init__(self, fraction: float, max_per_domain: int, max_caller_share: float) -> None:
        self.fraction = fraction
        self.max_per_domain = max_per_domain
        self.max_caller_share = max_caller_share
        self._by_domain: dict[str, deque[TraceRecord]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_domain)

    def takes(self, record: TraceRecord) -> bool:
        """Whether this trace belongs to the held-out side (stable across redeliveries)."""
        return is_heldout(record, self.fraction)

    def add(self, record: TraceRecord) -> None:
        self._by_domain.setdefault(record.domain, deque(maxlen=self.max_per_domain)).append(record)

    def records(self) -> list[TraceRecord]:
        """Every record held (for checkpoints)."""
        return [r for records in self._by_domain.values() for r in records]

    def for_evaluation(self, fresh: list[TraceRecord], count: int) -> list[TraceRecord]:
        """What shadow evaluation judges: the newest ``count`` of these and ``fresh`` (unseen traces not
        held out), whatever their domain, callers capped."""
        return newest_with_caller_cap(self.records() + fresh, count, self.max_caller_share)
