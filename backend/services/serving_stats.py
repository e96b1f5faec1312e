"""Rolling in-memory time series of serving, for the dashboard's figures.

Prometheus counters give totals; an operator watching a swap or a domain shift needs the recent
past in time buckets, without running a Prometheus server next to the appliance. Buckets are kept
per (draft version, domain) so the figures can split either way; memory is bounded by ``buckets``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from borealis.wire import GenerateChunk

NO_VERSION = "none"
NO_DOMAIN = "unknown"


@dataclass
class Cell:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    steps: int = 0  # target steps of requests that speculated
    emitted: int = 0  # tokens those steps emitted: steps + accepted draft tokens
    accepted: int = 0  # accepted proposed tokens
    accepted_from_draft: int = 0  # of those, proposed by the learned draft (also counted if n-gram did)
    accepted_from_ngram: int = 0  # of those, proposed by n-gram lookup
    decode_seconds: float = 0.0  # decoding time of the requests (their shares of batched steps)
    target_only_seconds: float = 0.0  # the workers' estimate of the same without speculation

    def merge(self, other: Cell) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.prompt_tokens += other.prompt_tokens
        self.generation_tokens += other.generation_tokens
        self.steps += other.steps
        self.emitted += other.emitted
        self.accepted += other.accepted
        self.accepted_from_draft += other.accepted_from_draft
        self.accepted_from_ngram += other.accepted_from_ngram
        self.decode_seconds += other.decode_seconds
        self.target_only_seconds += other.target_only_seconds

    @property
    def mean_acceptance_length(self) -> float | None:
        return round(self.emitted / self.steps, 4) if self.steps else None

    @property
    def draft_share_of_accepted(self) -> float | None:
        """Share of accepted tokens the learned draft proposed: how much of τ is the draft's doing."""
        return round(self.accepted_from_draft / self.accepted, 4) if self.accepted else None

    @property
    def ngram_share_of_accepted(self) -> float | None:
        return round(self.accepted_from_ngram / self.accepted, 4) if self.accepted else None

    @property
    def speedup_over_target_only(self) -> float | None:
        return round(self.target_only_seconds / self.decode_seconds, 4) if self.decode_seconds > 0 else None


@dataclass
class _Bucket:
    index: int  # start time // bucket_seconds
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def cell(self, version: str, domain: str) -> Cell:
        return self.cells.setdefault((version, domain), Cell())


@dataclass(frozen=True)
class BucketSummary:
    start: float
    seconds: float
    total: Cell
    by_version: dict[str, Cell]
    by_domain: dict[str, Cell]


def _group(cells: Iterable[tuple[str, Cell]]) -> dict[str, Cell]:
    grouped: dict[str, Cell] = {}
    for key, cell in cells:
        grouped.setdefault(key, Cell()).merge(cell)
    return grouped


def _total(cells: Iterable[Cell]) -> Cell:
    total = Cell()
    for cell in cells:
        total.merge(cell)
    return total


class ServingStats:
    def __init__(
        self, bucket_seconds: float = 5.0, buckets: int = 720, clock: Callable[[], float] = time.time
    ) -> None:
        self.bucket_seconds = bucket_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: deque[_Bucket] = deque(maxlen=buckets)

    def _current(self, version: str | None, domain: str | None) -> Cell:
        index = int(self._clock() // self.bucket_seconds)
        if not self._buckets or self._buckets[-1].index != index:
            self._buckets.append(_Bucket(index))
        return self._buckets[-1].cell(version or NO_VERSION, domain or NO_DOMAIN)

    def record_finished(self, chunk: GenerateChunk, domain: str | None) -> None:
        stats = chunk.spec_decode
        with self._lock:
            cell = self._current(stats.draft_version if stats else None, domain)
            cell.requests += 1
            cell.prompt_tokens += chunk.prompt_tokens or 0
            cell.generation_tokens += chunk.completion_tokens or 0
            if stats is not None:
                cell.decode_seconds += stats.decode_seconds
                cell.target_only_seconds += stats.target_only_seconds
                if stats.num_drafts > 0:
                    cell.steps += stats.num_steps
                    cell.emitted += stats.num_steps + stats.num_accepted_tokens
                    cell.accepted += stats.num_accepted_tokens
                    cell.accepted_from_draft += stats.accepted_by_source.draft
                    cell.accepted_from_ngram += stats.accepted_by_source.ngram

    def record_error(self, domain: str | None) -> None:
        with self._lock:
            self._current(None, domain).errors += 1

    def series(self, since: float) -> list[BucketSummary]:
        """Buckets ending after ``since``, gaps filled with empty buckets (no traffic is data)."""
        now = self._clock()
        width = self.bucket_seconds
        with self._lock:
            kept = {
                b.index: [(key, replace(cell)) for key, cell in b.cells.items()]
                for b in self._buckets
                if (b.index + 1) * width > since
            }
        if not kept:
            return []
        summaries = []
        for index in range(min(kept), int(now // width) + 1):
            cells = kept.get(index, [])
            start = index * width
            summaries.append(
                BucketSummary(
                    start=start,
                    seconds=max(min(width, now - start), 1e-3),
                    total=_total(c for _, c in cells),
                    by_version=_group((v, c) for (v, _), c in cells),
                    by_domain=_group((d, c) for (_, d), c in cells),
                )
            )
        return summaries
