"""The engine thread's hand-off of a request's tokens to the worker's HTTP loop (``_Relay``)."""

from __future__ import annotations

from worker.engine.types import TokenEvent
from worker.inference.server import _Relay


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _steps(relay: _Relay, clock: _Clock, steps: list[list[int]], step_seconds: float) -> None:
    for index, tokens in enumerate(steps):
        clock.now += step_seconds
        final = "length" if index == len(steps) - 1 else None
        relay(TokenEvent("r", tokens, finish_reason=final))


STEPS = [[1], [2, 3], [4], [5, 6, 7], [8], [9], [10, 11], [12]]


def test_a_streamed_request_gets_its_first_token_at_once_and_then_one_hand_over_per_interval() -> None:
    posted: list[TokenEvent | BaseException] = []
    clock = _Clock()
    _steps(_Relay(posted.append, during=True, interval=0.025, clock=clock), clock, STEPS, 0.010)
    events = [event for event in posted if isinstance(event, TokenEvent)]
    # steps end at 10, 20, ... 80 ms: the first at once, then each 25 ms past the last hand-over
    assert [event.token_ids for event in events] == [[1], [2, 3, 4, 5, 6, 7], [8, 9, 10, 11], [12]]
    assert [event.finish_reason for event in events] == [None, None, None, "length"]


def test_interval_zero_hands_over_every_step_and_no_stream_only_the_end() -> None:
    every: list[TokenEvent | BaseException] = []
    clock = _Clock()
    relay = _Relay(every.append, during=True, interval=0.0, clock=clock)
    _steps(relay, clock, STEPS, 0.010)
    assert [event.token_ids for event in every if isinstance(event, TokenEvent)] == STEPS
    assert relay.after_first_token_seconds == 0.07

    whole: list[TokenEvent | BaseException] = []
    _steps(_Relay(whole.append, during=False, interval=0.0, clock=clock), clock, STEPS, 0.010)
    assert [event.token_ids for event in whole if isinstance(event, TokenEvent)] == [list(range(1, 13))]


def test_a_step_without_tokens_hands_nothing_over_and_errors_go_at_once() -> None:
    posted: list[TokenEvent | BaseException] = []
    clock = _Clock()
    relay = _Relay(posted.append, during=True, interval=0.0, clock=clock)
    relay(TokenEvent("r", []))
    assert posted == []
    failure = RuntimeError("engine failed")
    relay(failure)
    assert posted == [failure]
