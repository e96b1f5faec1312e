"""Serving time series: buckets, gaps, acceptance only from speculating requests, bounded memory."""

from __future__ import annotations

from backend.services.serving_stats import ServingStats
from borealis.wire import GenerateChunk, SpecDecodeStats


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def finished(
    tokens: int, version: str | None, steps: int = 0, drafts: int = 0, accepted: int = 0
) -> GenerateChunk:
    stats = SpecDecodeStats(
        num_steps=steps, num_drafts=drafts, num_accepted_tokens=accepted, draft_version=version
    )
    return GenerateChunk(
        request_id="r",
        text="",
        finish_reason="length",
        prompt_tokens=3,
        completion_tokens=tokens,
        spec_decode=stats,
    )


def test_buckets_split_by_version_and_domain_and_fill_gaps() -> None:
    clock = Clock(1000.0)
    stats = ServingStats(bucket_seconds=10, buckets=100, clock=clock)
    stats.record_finished(finished(8, "v0001", steps=4, drafts=4, accepted=4), "code")
    stats.record_finished(finished(6, "v0001", steps=6, drafts=6, accepted=0), "chat")
    stats.record_error("chat")
    clock.now = 1031.0  # two empty buckets, then one request
    stats.record_finished(finished(5, None, steps=5), "code")
    clock.now = 1035.0
    series = stats.series(since=0)
    assert [b.start for b in series] == [1000, 1010, 1020, 1030]
    first, gap, _, last = series
    assert (first.total.requests, first.total.errors, first.total.generation_tokens) == (2, 1, 14)
    assert first.seconds == 10 and last.seconds == 5  # the newest bucket is still filling
    assert first.total.mean_acceptance_length == round((4 + 4 + 6) / 10, 4)
    assert first.by_domain["code"].mean_acceptance_length == 2.0
    assert first.by_domain["chat"].errors == 1 and first.by_version["none"].errors == 1
    assert gap.total.requests == 0 and gap.total.mean_acceptance_length is None
    # Plain decoding (no proposals) is traffic but says nothing about acceptance.
    assert last.total.requests == 1 and last.total.mean_acceptance_length is None
    assert set(last.by_version) == {"none"}


def test_window_and_memory_are_bounded() -> None:
    clock = Clock(0.0)
    stats = ServingStats(bucket_seconds=1, buckets=5, clock=clock)
    for second in range(20):
        clock.now = float(second)
        stats.record_finished(finished(1, "v0001"), "code")
    assert [b.start for b in stats.series(since=0)] == [15, 16, 17, 18, 19]
    assert [b.start for b in stats.series(since=17.5)] == [17, 18, 19]
    assert ServingStats(clock=clock).series(since=0) == []


def test_speedup_is_time_weighted_over_requests() -> None:
    """Sum of target-only estimates over sum of decoding time, not a mean of per-request ratios."""
    clock = Clock(100.0)
    stats = ServingStats(bucket_seconds=10, buckets=10, clock=clock)
    for decode, target_only in ((1.0, 3.0), (3.0, 3.0)):
        chunk = finished(8, "v0001", steps=4, drafts=4, accepted=4)
        assert chunk.spec_decode is not None
        chunk.spec_decode.decode_seconds, chunk.spec_decode.target_only_seconds = decode, target_only
        stats.record_finished(chunk, "code")
    stats.record_finished(finished(5, None), "chat")  # nothing decoded: no effect on the ratio
    (bucket,) = stats.series(since=0)
    assert bucket.total.speedup_over_target_only == 1.5
    assert bucket.by_domain["chat"].speedup_over_target_only is None
